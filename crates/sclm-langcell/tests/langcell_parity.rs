//! Parity with the published code (fixtures/langcell, written by
//! scripts/fixtures/make_langcell_fixtures.py): the cell encoder against `transformers`
//! `BertModel` 4.39, the text encoder in both modes and the three heads against LangCell's own
//! `BertModel` (PharMolix/LangCell@69e41ef), WordPiece ids against `BertTokenizer`, zero-shot
//! predictions against the published notebook's scoring. Random weights at small shapes, read
//! through `sclm import langcell`'s importer from the published checkpoint layout.
use std::path::{Path, PathBuf};

use sclm_langcell::weights::{import_published, ImportSources};
use sclm_langcell::zeroshot::ZeroShotOptions;
use sclm_langcell::{Batch, LangCellModel};
use sclm_nn::burn::prelude::*;
use sclm_weights::StateDict;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/langcell")
}

fn outputs() -> StateDict {
    sclm_weights::read_safetensors(fixtures().join("outputs.safetensors")).unwrap()
}

fn f32s(sd: &StateDict, k: &str) -> Vec<f32> {
    sd[k].to_f32_vec()
}

fn ints(sd: &StateDict, k: &str) -> (Vec<i64>, Vec<usize>) {
    let t = &sd[k];
    (t.as_i64().expect("int tensor").to_vec(), t.shape.clone())
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

fn import() -> (LangCellModel, String) {
    let dev = sclm_nn::cpu_device();
    let src = ImportSources {
        dir: fixtures().join("ckpt"),
        token_dictionary: fixtures().join("token_dictionary.tsv"),
        gene_medians: fixtures().join("gene_median_dictionary.tsv"),
        text_tokenizer: None,
    };
    let (model, genes, text, report) = import_published(&src, &dev).unwrap();
    (LangCellModel::new(model, genes, text, dev).unwrap(), report.summary())
}

/// Token sequences (without padding) and the padded batch of an `ids`/`attention_mask` pair.
fn sequences(sd: &StateDict, ids: &str, mask: &str) -> Vec<Vec<u32>> {
    let (ids, shape) = ints(sd, ids);
    let (att, _) = ints(sd, mask);
    let n = shape[1];
    (0..shape[0]).map(|i| (0..n).filter(|&j| att[i * n + j] == 1).map(|j| ids[i * n + j] as u32).collect()).collect()
}

fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap()
}

#[test]
fn import_reports_skipped_buffers_and_loads_every_tensor() {
    let (m, summary) = import();
    assert!(summary.contains("cell_bert"), "{summary}");
    assert_eq!(m.model().config().cell.vocab_size, 40);
    assert_eq!(m.model().config().text.type_vocab_size, 0, "LangCell's text encoder has no token-type table");
    assert_eq!(m.model().config().text.cross_width(), 24);
    assert_eq!(m.model().config().proj_dim, 8);
}

#[test]
fn cell_encoder_matches_transformers_bert_model() {
    let (m, _) = import();
    let sd = outputs();
    let cells = sequences(&sd, "cell_ids", "cell_attention_mask");
    let batch = Batch::cells(&cells, m.device()).unwrap();
    let (h, emb) = m.model().encode_cells(&batch).unwrap();
    let want = f32s(&sd, "cell_hidden");
    let got = to_vec(h);
    // Padded positions too: masking is on keys only, as in transformers.
    let d = max_diff(&got, &want);
    assert!(d < 1e-4, "cell hidden states differ by {d}");
    let d = max_diff(&to_vec(emb), &f32s(&sd, "cell_emb"));
    assert!(d < 1e-4, "cell embeddings differ by {d}");
    // The embedder (cells one run at a time, sorted by length) gives the same embeddings.
    let e = m.embed_tokens(&cells).unwrap();
    let d = max_diff(&e, &f32s(&sd, "cell_emb"));
    assert!(d < 1e-4, "embed_tokens differs by {d}");
}

#[test]
fn wordpiece_ids_equal_bert_tokenizer() {
    let (m, _) = import();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("manifest.json")).unwrap()).unwrap();
    let want = manifest["tiny_vocab_ids"].as_object().unwrap();
    assert!(!want.is_empty());
    for (s, ids) in want {
        let ids: Vec<u32> = ids.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
        let got = m.text_tokenizer().encode(s).unwrap();
        assert_eq!(got.ids, ids, "ids of {s:?}");
    }
    // The first sentence is cut to the 24 positions, keeping [SEP].
    let long = manifest["sentences"][0].as_str().unwrap();
    assert!(m.text_tokenizer().encode(long).unwrap().truncated > 0);
}

#[test]
fn text_encoder_both_modes_and_heads_match_langcell_code() {
    let (m, _) = import();
    let sd = outputs();
    let texts = sequences(&sd, "text_ids", "text_attention_mask");
    let tb = Batch::new(&texts, 0, m.device()).unwrap();
    let h = m.model().text_bert.forward(tb.ids.clone(), tb.mask.clone(), None).unwrap();
    let d = max_diff(&to_vec(h), &f32s(&sd, "text_hidden"));
    assert!(d < 1e-4, "unimodal text states differ by {d}");
    let d = max_diff(&to_vec(m.model().encode_texts(&tb).unwrap()), &f32s(&sd, "text_emb"));
    assert!(d < 1e-4, "text embeddings differ by {d}");

    // Multimodal: class 0's text against every cell.
    let cells = sequences(&sd, "cell_ids", "cell_attention_mask");
    let cb = Batch::cells(&cells, m.device()).unwrap();
    let (states, _) = m.model().encode_cells(&cb).unwrap();
    let t0 = Batch::new(&vec![texts[0].clone(); cells.len()], 0, m.device()).unwrap();
    let ctx = sclm_langcell::bert::CrossContext { states: states.clone(), mask: cb.mask.clone() };
    let mh = m.model().text_bert.forward(t0.ids.clone(), None, Some(&ctx)).unwrap();
    let d = max_diff(&to_vec(mh), &f32s(&sd, "multimodal_hidden_class0"));
    assert!(d < 1e-4, "multimodal text states differ by {d}");

    // CTM probabilities of every class, and zero-shot scores.
    let classes: Vec<String> =
        serde_json::from_str::<serde_json::Value>(&std::fs::read_to_string(fixtures().join("manifest.json")).unwrap())
            .unwrap()["classes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
    let ct = m.class_texts(&classes).unwrap();
    let d = max_diff(&ct.embeddings, &f32s(&sd, "text_emb"));
    assert!(d < 1e-4, "class text embeddings differ by {d}");
    let scores = m.zero_shot_tokens(&cells, &ct, &ZeroShotOptions::default()).unwrap();
    for (k, got) in [("sim", &scores.sim), ("ctm_prob", &scores.match_prob), ("ctm", &scores.ctm)] {
        let d = max_diff(got, &f32s(&sd, k));
        assert!(d < 1e-4, "{k} differs by {d}");
    }
    for (a, key) in [(0.1, "pred_alpha1"), (0.2, "pred_alpha2")] {
        let (want, _) = ints(&sd, key);
        let got: Vec<i64> = scores.predictions(a).into_iter().map(|p| p as i64).collect();
        assert_eq!(got, want, "zero-shot predictions at alpha {a}");
    }
}

#[test]
fn masked_attention_ignores_padding() {
    // A cell alone and the same cell padded in a batch with a longer one embed equally.
    let (m, _) = import();
    let short = vec![39u32, 5, 9, 2];
    let long: Vec<u32> = std::iter::once(39).chain(2..30).collect();
    let alone = m.embed_tokens(std::slice::from_ref(&short)).unwrap();
    let b = Batch::cells(&[short, long], m.device()).unwrap();
    let (_, e) = m.model().encode_cells(&b).unwrap();
    let v = to_vec(e);
    let d = max_diff(&alone, &v[..alone.len()]);
    assert!(d < 1e-5, "padding changed an embedding by {d}");
}

#[test]
fn text_encoder_from_a_pretrained_bert_keeps_its_weights_and_adds_fresh_cross_attention() {
    // The fixture's text_bert/ is a Hugging Face directory; start a text encoder from it whose
    // cross-attention reads 16-wide states: its unimodal output is the file's.
    let dev = sclm_nn::cpu_device();
    let (bert, tok, report, fresh) =
        sclm_langcell::weights::text_encoder_from_hf(&fixtures().join("ckpt/text_bert"), 16, &dev).unwrap();
    assert_eq!(bert.config().cross_width(), 16);
    assert!(!fresh.is_empty() && fresh.iter().all(|k| k.contains("crossattention")));
    assert!(
        report.skipped.iter().any(|k| k.contains("crossattention")),
        "the file's 24-wide cross-attention is skipped"
    );
    let sd = outputs();
    let texts = sequences(&sd, "text_ids", "text_attention_mask");
    let tb = Batch::new(&texts, 0, &dev).unwrap();
    let h = bert.forward(tb.ids, tb.mask, None).unwrap();
    let d = max_diff(&to_vec(h), &f32s(&sd, "text_hidden"));
    assert!(d < 1e-4, "unimodal states differ by {d}");
    assert_eq!(tok.encode("cell type: B cell.").unwrap().ids, vec![2, 5, 6, 7, 9, 5, 23, 3]);
}
