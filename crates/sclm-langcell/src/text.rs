//! Text tokenization for the text encoder: BERT WordPiece through the `tokenizers` crate (the
//! implementation behind Hugging Face's fast tokenizers), read from a `tokenizer.json` or built
//! from a BERT `vocab.txt` the way `BertTokenizer` works (clean text, split CJK characters,
//! lower-case and strip accents when uncased, split on whitespace and punctuation, greedy
//! longest-match WordPiece with `##` continuations, `[CLS] … [SEP]`).
use std::path::Path;

use tokenizers::decoders::wordpiece::WordPiece as WordPieceDecoder;
use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::Tokenizer;

use crate::error::{LangCellError, Result};

/// A text tokenizer and the longest input its encoder takes.
#[derive(Clone)]
pub struct TextTokenizer {
    inner: Tokenizer,
    max_tokens: usize,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("max_tokens", &self.max_tokens)
            .finish()
    }
}

/// The token ids of one text and whether it was cut to fit.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedText {
    /// `[CLS] … [SEP]`, at most the encoder's positions.
    pub ids: Vec<u32>,
    /// Tokens dropped from the end (before `[SEP]`) to fit the positions.
    pub truncated: usize,
}

fn tk_err(path: &Path, e: impl std::fmt::Display) -> LangCellError {
    LangCellError::Tokenizer { path: path.display().to_string(), message: e.to_string() }
}

impl TextTokenizer {
    /// Reads a Hugging Face `tokenizer.json`; inputs are cut to `max_tokens`.
    pub fn from_file(path: &Path, max_tokens: usize) -> Result<Self> {
        if !path.is_file() {
            return Err(tk_err(path, "no such file"));
        }
        let inner = Tokenizer::from_file(path).map_err(|e| tk_err(path, e))?;
        Self::checked(inner, path, max_tokens)
    }

    /// Builds BERT's WordPiece tokenizer from a `vocab.txt` (one token per line, id = line
    /// number); `lowercase` for uncased vocabularies (accents are then stripped too, as
    /// `BertTokenizer` does).
    pub fn from_vocab(path: &Path, lowercase: bool, max_tokens: usize) -> Result<Self> {
        let p = path.to_str().ok_or_else(|| tk_err(path, "path is not UTF-8"))?;
        if !path.is_file() {
            return Err(tk_err(path, "no such file"));
        }
        let wp = WordPiece::from_file(p).unk_token("[UNK]".into()).build().map_err(|e| tk_err(path, e))?;
        let mut inner = Tokenizer::new(wp);
        let id = |t: &str| inner.token_to_id(t).ok_or_else(|| tk_err(path, format!("the vocabulary has no {t}")));
        let (cls, sep) = (id("[CLS]")?, id("[SEP]")?);
        id("[UNK]")?;
        inner.with_normalizer(Some(BertNormalizer::new(true, true, None, lowercase))).map_err(|e| tk_err(path, e))?;
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        inner.with_post_processor(Some(BertProcessing::new(("[SEP]".into(), sep), ("[CLS]".into(), cls))));
        inner.with_decoder(Some(WordPieceDecoder::default()));
        Self::checked(inner, path, max_tokens)
    }

    /// A lower-case WordPiece tokenizer whose vocabulary is built from `texts`: the special
    /// tokens, every word (lower-cased, split on whitespace and punctuation as BERT does) and
    /// every character alone and as a `##` continuation, so any text of the same alphabet
    /// tokenizes without `[UNK]`. For models pretrained from scratch on class texts.
    pub fn from_texts(texts: &[String], max_tokens: usize) -> Result<Self> {
        let mut vocab: Vec<String> =
            ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].iter().map(|s| s.to_string()).collect();
        let mut seen: std::collections::HashSet<String> = vocab.iter().cloned().collect();
        let mut add = |t: String, vocab: &mut Vec<String>| {
            if seen.insert(t.clone()) {
                vocab.push(t);
            }
        };
        let mut chars = std::collections::BTreeSet::new();
        for t in texts {
            let lower = t.to_lowercase();
            let mut word = String::new();
            for c in lower.chars() {
                if c.is_alphanumeric() {
                    word.push(c);
                    chars.insert(c);
                } else {
                    if !word.is_empty() {
                        add(std::mem::take(&mut word), &mut vocab);
                    }
                    if !c.is_whitespace() && !c.is_control() {
                        add(c.to_string(), &mut vocab);
                    }
                }
            }
            if !word.is_empty() {
                add(word, &mut vocab);
            }
        }
        for c in "abcdefghijklmnopqrstuvwxyz0123456789".chars() {
            chars.insert(c);
        }
        for c in chars {
            add(c.to_string(), &mut vocab);
            add(format!("##{c}"), &mut vocab);
        }
        let stamp =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let path = std::env::temp_dir().join(format!("sclm-vocab-{}-{stamp}.txt", std::process::id()));
        std::fs::write(&path, vocab.join("\n") + "\n").map_err(|e| LangCellError::io(&path, e))?;
        let tok = Self::from_vocab(&path, true, max_tokens);
        let _ = std::fs::remove_file(&path);
        tok
    }

    /// Reads a tokenizer from a Hugging Face model directory: `tokenizer.json` when present,
    /// else `vocab.txt` (lower-cased unless `tokenizer_config.json` says `do_lower_case: false`).
    pub fn from_hf_dir(dir: &Path, max_tokens: usize) -> Result<Self> {
        let tj = dir.join("tokenizer.json");
        if tj.is_file() {
            return Self::from_file(&tj, max_tokens);
        }
        let lower = std::fs::read_to_string(dir.join("tokenizer_config.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|v| v.get("do_lower_case").and_then(|b| b.as_bool()))
            .unwrap_or(true);
        Self::from_vocab(&dir.join("vocab.txt"), lower, max_tokens)
    }

    fn checked(mut inner: Tokenizer, path: &Path, max_tokens: usize) -> Result<Self> {
        // A tokenizer.json may pad to a fixed length or truncate by its own rule; the model
        // pads per batch and cuts to its positions here.
        inner.with_padding(None);
        inner.with_truncation(None).map_err(|e| tk_err(path, e))?;
        if max_tokens < 2 {
            return Err(tk_err(path, "the encoder takes fewer than 2 tokens"));
        }
        Ok(TextTokenizer { inner, max_tokens })
    }

    /// Token rows the tokenizer can emit (including added tokens).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Longest output.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// Tokenizes one text with `[CLS]`/`[SEP]`, cut to the encoder's positions as the published
    /// code does (`truncation=True`), keeping `[SEP]` last; the cut is reported.
    pub fn encode(&self, text: &str) -> Result<EncodedText> {
        let enc = self.inner.encode(text, true).map_err(|e| LangCellError::Tokenizer {
            path: "text".into(),
            message: format!("'{}': {e}", short(text)),
        })?;
        let mut ids = enc.get_ids().to_vec();
        let mut truncated = 0;
        if ids.len() > self.max_tokens {
            truncated = ids.len() - self.max_tokens;
            let last = ids[ids.len() - 1];
            ids.truncate(self.max_tokens - 1);
            ids.push(last);
        }
        Ok(EncodedText { ids, truncated })
    }

    /// Saves the tokenizer as `tokenizer.json`.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.inner.save(path, false).map_err(|e| tk_err(path, e))
    }
}

fn short(s: &str) -> String {
    let mut t: String = s.chars().take(40).collect();
    if t.len() < s.len() {
        t.push('…');
    }
    t
}
