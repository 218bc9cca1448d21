//! Weights: the published state-dict keys ([`LangCell::slots`]), our model directory, and the
//! importer of the published checkpoint layout:
//!
//! ```text
//! ckpt/cell_bert/{config.json, pytorch_model.bin | model.safetensors}   transformers.BertModel
//! ckpt/text_bert/{config.json, pytorch_model.bin | model.safetensors}   LangCell utils.BertModel
//! ckpt/cell_proj.bin  ckpt/text_proj.bin  ckpt/ctm_head.bin             nn.Linear state dicts
//! ```
//!
//! Encoder keys may carry a `bert.` prefix and an `embeddings.position_ids` buffer (both depend
//! on how the directory was saved); pooler weights are unused (LangCell replaces the pooler by
//! its projections). Those are reported as skipped.
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use burn::prelude::*;
use sclm_model::Manifest;
use sclm_nn::burn;
use sclm_weights::{LoadReport, StateDict, TensorData, TensorLoader};

use crate::config::{BertConfig, LangCellConfig};
use crate::error::{LangCellError, Result};
use crate::model::LangCell;
use crate::text::TextTokenizer;
use crate::tokenizer::RankValueTokenizer;

impl LangCell {
    /// The state-dict names and shapes (published layout) this model expects.
    pub fn expected_tensors(&mut self) -> Vec<(String, Vec<usize>)> {
        self.slots().iter().map(|(k, s)| (k.clone(), s.torch_shape())).collect()
    }

    /// Builds a model from `config` with its weights from a state dict under the published names
    /// (`path` names the source in messages). Every expected tensor must be present with its
    /// shape; tensors the model does not use are reported as skipped.
    pub fn from_state_dict(
        config: &LangCellConfig,
        sd: StateDict,
        path: impl AsRef<Path>,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let mut model = config.init(device)?;
        let mut loader = TensorLoader::new(path.as_ref(), sd);
        for (key, mut slot) in model.slots() {
            if let Some(v) = loader.take_f32(&key, &slot.torch_shape()) {
                slot.set(v, device);
            }
        }
        Ok((model, loader.finish_complete()?))
    }

    /// All weights as a state dict with the published names and layouts.
    pub fn to_state_dict(&mut self) -> Result<StateDict> {
        let mut sd = StateDict::new();
        for (key, slot) in self.slots() {
            sd.insert(key, TensorData::from_f32(slot.torch_shape(), slot.get())?);
        }
        Ok(sd)
    }

    /// A copy of the model on `device` (through its state dict).
    pub fn copy_to(&self, device: &Device) -> Result<Self> {
        let mut m = self.clone();
        let sd = m.to_state_dict()?;
        Ok(Self::from_state_dict(self.config(), sd, "the model in memory", device)?.0)
    }
}

/// Writes the files of a LangCell model directory into the existing directory `dir`:
/// `model.json`, `langcell.json` (config), `genes.txt` (Ensembl ids in token order),
/// `gene_medians.tsv`, `tokenizer.json` (text) and `model.safetensors` (published names).
pub fn write_files(
    dir: &Path,
    manifest: &Manifest,
    model: &mut LangCell,
    genes: &RankValueTokenizer,
    text: &TextTokenizer,
) -> Result<()> {
    sclm_model::dir::write_text(dir, "model.json", &manifest.to_json())?;
    sclm_model::dir::write_text(dir, "langcell.json", &model.config().to_json())?;
    sclm_model::dir::write_text(dir, "genes.txt", &(genes.genes().join("\n") + "\n"))?;
    sclm_model::dir::write_text(dir, "gene_medians.tsv", &genes.medians_tsv())?;
    text.save(&dir.join("tokenizer.json"))?;
    let sd = model.to_state_dict()?;
    let mut meta = HashMap::new();
    meta.insert("format".to_string(), "sclm-langcell".to_string());
    sclm_weights::write_safetensors(dir.join("model.safetensors"), &sd, Some(meta))?;
    Ok(())
}

/// Reads the files written by [`write_files`].
pub fn read_files(dir: &Path, device: &Device) -> Result<(LangCell, RankValueTokenizer, TextTokenizer)> {
    let config = LangCellConfig::from_json_file(dir.join("langcell.json"))?;
    let genes = RankValueTokenizer::from_medians_tsv(&dir.join("gene_medians.tsv"), config.max_cell_tokens)?;
    let listed = sclm_model::dir::read_genes(dir)?;
    if listed != genes.genes() {
        return Err(LangCellError::Config(format!(
            "{}: genes.txt ({} genes) disagrees with gene_medians.tsv ({} genes)",
            dir.display(),
            listed.len(),
            genes.genes().len()
        )));
    }
    check_cell_vocab(&config.cell, &genes, dir)?;
    let text = TextTokenizer::from_file(&dir.join("tokenizer.json"), config.text.max_position_embeddings)?;
    check_text_vocab(&config.text, &text, dir)?;
    let wpath = dir.join("model.safetensors");
    let sd = sclm_weights::read_safetensors(&wpath)?;
    let (model, report) = LangCell::from_state_dict(&config, sd, &wpath, device)?;
    if !report.skipped.is_empty() {
        return Err(LangCellError::Config(format!(
            "{} holds tensors the model does not use: {}",
            wpath.display(),
            report.skipped.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok((model, genes, text))
}

fn check_cell_vocab(cell: &BertConfig, genes: &RankValueTokenizer, source: &Path) -> Result<()> {
    if cell.vocab_size != genes.vocab_size() {
        return Err(LangCellError::Config(format!(
            "vocabulary mismatch: {} has {} cell-token rows, but the gene dictionary gives {} \
             ({} genes + <pad>, <mask>, <cls>)",
            source.display(),
            cell.vocab_size,
            genes.vocab_size(),
            genes.genes().len()
        )));
    }
    Ok(())
}

fn check_text_vocab(text: &BertConfig, tok: &TextTokenizer, source: &Path) -> Result<()> {
    if tok.vocab_size() > text.vocab_size {
        return Err(LangCellError::Config(format!(
            "vocabulary mismatch: the text tokenizer emits {} token ids but {} has {} text-token rows",
            tok.vocab_size(),
            source.display(),
            text.vocab_size
        )));
    }
    Ok(())
}

/// Where the pieces of a published checkpoint are.
#[derive(Debug, Clone)]
pub struct ImportSources {
    /// The checkpoint directory (`cell_bert/`, `text_bert/`, `*.bin`).
    pub dir: PathBuf,
    /// Geneformer token dictionary (`token<TAB>id`).
    pub token_dictionary: PathBuf,
    /// Geneformer gene medians (`ensembl_id<TAB>median`).
    pub gene_medians: PathBuf,
    /// Text tokenizer (`tokenizer.json`, `vocab.txt` or a Hugging Face directory); `None` = the
    /// one in `text_bert/`.
    pub text_tokenizer: Option<PathBuf>,
}

/// What an import loaded, per part.
#[derive(Debug, Clone, Default)]
pub struct ImportReport {
    /// `(part, report)` for `cell_bert`, `text_bert`, `cell_proj`, `text_proj`, `ctm_head`.
    pub parts: Vec<(String, LoadReport)>,
    /// Facts worth telling (resized vocabulary, inferred widths).
    pub notes: Vec<String>,
}

impl ImportReport {
    /// One line per part and note.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for (p, r) in &self.parts {
            s.push_str(&format!("{p}: {}\n", r.summary()));
            if !r.skipped.is_empty() {
                s.push_str(&format!("  skipped: {}\n", r.skipped.join(", ")));
            }
        }
        for n in &self.notes {
            s.push_str(n);
            s.push('\n');
        }
        s
    }
}

/// The weights file of a Hugging Face directory.
fn hf_weights(dir: &Path) -> Result<PathBuf> {
    for f in ["model.safetensors", "pytorch_model.bin"] {
        let p = dir.join(f);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(LangCellError::Config(format!("{}: neither model.safetensors nor pytorch_model.bin", dir.display())))
}

/// An encoder's state dict with a `bert.` prefix removed and the buffers and pooler set apart
/// (returned as skipped names).
fn encoder_state(path: &Path) -> Result<(StateDict, Vec<String>)> {
    let raw = sclm_weights::read_weights(path, "")?;
    let prefixed = raw.keys().all(|k| k.starts_with("bert."));
    let mut sd = StateDict::new();
    let mut skipped = Vec::new();
    for (k, v) in raw {
        let name = if prefixed { k["bert.".len()..].to_string() } else { k.clone() };
        if name == "embeddings.position_ids"
            || name.starts_with("pooler.")
            || !name.starts_with("embeddings.") && !name.starts_with("encoder.")
        {
            skipped.push(k);
        } else {
            sd.insert(name, v);
        }
    }
    Ok((sd, skipped))
}

/// The `(rows, cols)` of a 2-D tensor of `sd`.
fn shape2(sd: &StateDict, key: &str, path: &Path) -> Result<(usize, usize)> {
    match sd.get(key).map(|t| t.shape.as_slice()) {
        Some([a, b]) => Ok((*a, *b)),
        Some(s) => Err(LangCellError::Config(format!("{}: {key} has shape {s:?}, expected 2-D", path.display()))),
        None => Err(LangCellError::Config(format!("{}: no tensor {key}", path.display()))),
    }
}

/// A Hugging Face BERT directory as read: `config.json` with the sizes the weights have
/// (vocabulary, positions, token-type rows; cross-attention and its width when the weights have
/// it), the encoder's state dict (prefix removed), the names set aside and the weights file.
struct HfEncoder {
    cfg: BertConfig,
    /// The vocabulary size `config.json` gave (the weights may disagree).
    config_vocab: usize,
    sd: StateDict,
    skipped: Vec<String>,
    wpath: PathBuf,
}

fn read_hf_encoder(dir: &Path) -> Result<HfEncoder> {
    let mut cfg = BertConfig::from_json_file(dir.join("config.json"))?;
    let wpath = hf_weights(dir)?;
    let (sd, skipped) = encoder_state(&wpath)?;
    let config_vocab = cfg.vocab_size;
    cfg.vocab_size = shape2(&sd, "embeddings.word_embeddings.weight", &wpath)?.0;
    cfg.max_position_embeddings = shape2(&sd, "embeddings.position_embeddings.weight", &wpath)?.0;
    cfg.type_vocab_size =
        sd.get("embeddings.token_type_embeddings.weight").and_then(|t| t.shape.first().copied()).unwrap_or(0);
    match sd.get("encoder.layer.0.crossattention.self.key.weight").map(|t| t.shape.clone()) {
        Some(s) if s.len() == 2 => {
            cfg.add_cross_attention = true;
            cfg.encoder_width = Some(s[1]);
        }
        _ => {
            cfg.add_cross_attention = false;
            cfg.encoder_width = None;
        }
    }
    Ok(HfEncoder { cfg, config_vocab, sd, skipped, wpath })
}

/// Sets every parameter of `bert` whose key `keep` accepts from `loader`.
fn fill(bert: &mut crate::bert::Bert, loader: &mut TensorLoader, keep: impl Fn(&str) -> bool, device: &Device) {
    let mut t = Vec::new();
    bert.slots(&mut t, "");
    for (key, mut slot) in t {
        if keep(&key) {
            if let Some(v) = loader.take_f32(&key, &slot.torch_shape()) {
                slot.set(v, device);
            }
        }
    }
}

/// Imports a published LangCell checkpoint directory (see the module docs) with the Geneformer
/// vocabulary files. Vocabulary sizes, the text encoder's cross-attention width and whether it
/// has a token-type table are read from the weights (the published configs may disagree with
/// them: LangCell resizes the text vocabulary after adding `[DEC]`/`[ENC]`); a cell vocabulary
/// that does not match the gene dictionary is an error.
pub fn import_published(
    src: &ImportSources,
    device: &Device,
) -> Result<(LangCell, RankValueTokenizer, TextTokenizer, ImportReport)> {
    let dir = &src.dir;
    let mut report = ImportReport::default();
    let mut all = StateDict::new();
    let mut cfgs = Vec::new();
    let mut skipped_of = Vec::new();
    for part in ["cell_bert", "text_bert"] {
        let HfEncoder { mut cfg, config_vocab, sd, skipped, wpath } = read_hf_encoder(&dir.join(part))?;
        if cfg.vocab_size != config_vocab {
            report.notes.push(format!(
                "{part}: {} token rows in the weights ({config_vocab} in config.json); the weights win",
                cfg.vocab_size
            ));
        }
        if part == "text_bert" && !cfg.add_cross_attention {
            return Err(LangCellError::Config(format!(
                "{}: the text encoder has no cross-attention weights (encoder.layer.0.crossattention.*); \
                 a LangCell text_bert has them in every layer",
                wpath.display()
            )));
        }
        if part == "cell_bert" {
            cfg.add_cross_attention = false;
            cfg.encoder_width = None;
        }
        for (k, v) in sd {
            all.insert(format!("{part}.{k}"), v);
        }
        cfgs.push(cfg);
        skipped_of.push((part.to_string(), wpath, skipped));
    }
    for head in ["cell_proj", "text_proj", "ctm_head"] {
        let p = dir.join(format!("{head}.bin"));
        let sd = sclm_weights::read_weights(&p, "")?;
        for (k, v) in sd {
            all.insert(format!("{head}.{k}"), v);
        }
    }
    let text_cfg = cfgs.pop().unwrap_or_default();
    let cell_cfg = cfgs.pop().unwrap_or_default();
    let (proj_dim, _) = shape2(&all, "cell_proj.weight", &dir.join("cell_proj.bin"))?;
    let config = LangCellConfig {
        max_cell_tokens: 2048.min(cell_cfg.max_position_embeddings),
        cell: cell_cfg,
        text: text_cfg,
        proj_dim,
        ..LangCellConfig::published()
    };
    config.validate()?;
    let genes =
        RankValueTokenizer::from_geneformer_files(&src.token_dictionary, &src.gene_medians, config.max_cell_tokens)?;
    check_cell_vocab(&config.cell, &genes, &dir.join("cell_bert"))?;
    let tpath = src.text_tokenizer.clone().unwrap_or_else(|| dir.join("text_bert"));
    let max_text = config.text.max_position_embeddings;
    let text = if tpath.is_dir() {
        TextTokenizer::from_hf_dir(&tpath, max_text)
    } else if tpath.extension().is_some_and(|e| e == "json") {
        TextTokenizer::from_file(&tpath, max_text)
    } else {
        TextTokenizer::from_vocab(&tpath, true, max_text)
    }
    .map_err(|e| match src.text_tokenizer {
        None => LangCellError::Config(format!(
            "{e}; the published text_bert/ holds no tokenizer: pass the text tokenizer \
             (the PubMedBERT vocab.txt or tokenizer.json) explicitly"
        )),
        Some(_) => e,
    })?;
    check_text_vocab(&config.text, &text, &dir.join("text_bert"))?;
    let (model, full) = LangCell::from_state_dict(&config, all, dir, device)?;
    // Split the one report into parts.
    for (part, _, skipped) in &skipped_of {
        let mut r = LoadReport {
            loaded: full.loaded.iter().filter(|k| k.starts_with(&format!("{part}."))).cloned().collect(),
            skipped: skipped.clone(),
            ..Default::default()
        };
        r.skipped.extend(full.skipped.iter().filter(|k| k.starts_with(&format!("{part}."))).cloned());
        report.parts.push((part.clone(), r));
    }
    for head in ["cell_proj", "text_proj", "ctm_head"] {
        let r = LoadReport {
            loaded: full.loaded.iter().filter(|k| k.starts_with(&format!("{head}."))).cloned().collect(),
            skipped: full.skipped.iter().filter(|k| k.starts_with(&format!("{head}."))).cloned().collect(),
            ..Default::default()
        };
        report.parts.push((head.to_string(), r));
    }
    Ok((model, genes, text, report))
}

/// Loads a Hugging Face BERT directory (`config.json` and `model.safetensors` or
/// `pytorch_model.bin`, e.g. all-MiniLM-L6-v2) as an encoder, with its vocabulary and width read
/// from the weights; pooler weights and buffers are reported as skipped.
pub fn load_hf_encoder(dir: &Path, device: &Device) -> Result<(crate::bert::Bert, LoadReport)> {
    let h = read_hf_encoder(dir)?;
    let mut bert = h.cfg.init(device)?;
    let mut loader = TensorLoader::new(&h.wpath, h.sd);
    fill(&mut bert, &mut loader, |_| true, device);
    let mut report = loader.finish_complete()?;
    report.skipped.extend(h.skipped);
    Ok((bert, report))
}

/// A text encoder for LangCell started from a pretrained Hugging Face BERT directory (the paper
/// starts from PubMedBERT; e.g. all-MiniLM-L6-v2 here): every self-attention, feed-forward and
/// embedding weight is taken from the directory, and a cross-attention block over
/// `cross_width`-wide cell states is added to every layer with fresh weights (the published
/// BLIP-style initialisation of cross-attention), as is the directory's tokenizer. The report
/// lists the loaded and skipped tensors; `fresh` names the cross-attention tensors started anew.
pub fn text_encoder_from_hf(
    dir: &Path,
    cross_width: usize,
    device: &Device,
) -> Result<(crate::bert::Bert, TextTokenizer, LoadReport, Vec<String>)> {
    let HfEncoder { mut cfg, sd, skipped, wpath, .. } = read_hf_encoder(dir)?;
    cfg.add_cross_attention = true;
    cfg.encoder_width = Some(cross_width);
    let mut bert = cfg.init(device)?;
    let mut loader = TensorLoader::new(&wpath, sd);
    let mut t = Vec::new();
    bert.slots(&mut t, "");
    let fresh: Vec<String> = t.into_iter().map(|(k, _)| k).filter(|k| k.contains(".crossattention.")).collect();
    fill(&mut bert, &mut loader, |k| !k.contains(".crossattention."), device);
    let mut report = loader.finish();
    report.ensure_complete(&wpath)?;
    report.skipped.extend(skipped);
    let tok = TextTokenizer::from_hf_dir(dir, cfg.max_position_embeddings)?;
    check_text_vocab(&cfg, &tok, dir)?;
    Ok((bert, tok, report, fresh))
}
