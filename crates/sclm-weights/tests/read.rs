//! Reader tests against checkpoints written by PyTorch itself (scripts/fixtures/make_cellplm_fixtures.py).

use std::path::{Path, PathBuf};

use sclm_weights::{
    read_safetensors, read_safetensors_with_metadata, read_torch, write_safetensors, DType, LoadReport, PyValue,
    StateDict, TensorData, TensorLoader, TensorValues, TorchCheckpoint, WeightsError,
};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

fn cellplm() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("..").join("fixtures").join("cellplm")
}

fn expected() -> StateDict {
    read_safetensors(fixtures().join("reader_test.expected.safetensors")).unwrap()
}

/// Exact equality of shape, dtype and every value (bitwise for floats).
fn assert_same(key: &str, got: &TensorData, want: &TensorData) {
    assert_eq!(got.shape, want.shape, "{key}: shape");
    assert_eq!(got.dtype, want.dtype, "{key}: dtype");
    match (&got.data, &want.data) {
        (TensorValues::F32(a), TensorValues::F32(b)) => {
            assert_eq!(a.len(), b.len(), "{key}: length");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_eq!(x.to_bits(), y.to_bits(), "{key}[{i}]: {x} vs {y}");
            }
        }
        (TensorValues::I64(a), TensorValues::I64(b)) => assert_eq!(a, b, "{key}"),
        _ => panic!("{key}: value kinds differ"),
    }
}

fn check_reader_fixture(file: &str) {
    let sd = read_torch(fixtures().join(file), "model_state_dict").unwrap();
    let want = expected();
    let want_keys: Vec<&String> = want.keys().filter(|k| !k.starts_with("nested.")).collect();
    let got_keys: Vec<&String> = sd.keys().collect();
    assert_eq!(got_keys, want_keys, "{file}: key set");
    for (k, t) in &sd {
        assert_same(&format!("{file}:{k}"), t, &want[k]);
    }
    let nested = read_torch(fixtures().join(file), "nested").unwrap();
    assert_same("nested", &nested["inner.w"], &want["nested.inner.w"]);
}

#[test]
fn zip_checkpoint_matches_safetensors_export() {
    check_reader_fixture("reader_test.ckpt");
}

#[test]
fn protocol4_checkpoint_matches_safetensors_export() {
    check_reader_fixture("reader_test_p4.ckpt");
}

#[test]
fn legacy_checkpoint_matches_safetensors_export() {
    check_reader_fixture("reader_test_legacy.ckpt");
}

#[test]
fn non_contiguous_shared_and_integer_tensors() {
    let sd = read_torch(fixtures().join("reader_test.ckpt"), "model_state_dict").unwrap();
    // `transposed` = t() of a 3x4 tensor: 4x3 with strides (1, 4); row i of it is column i of `big`-like data.
    let t = &sd["transposed"];
    assert_eq!(t.shape, vec![4, 3]);
    // Views of `big` (5x4) agree with `big` itself.
    let big = sd["big"].as_f32().unwrap();
    let slice = sd["big_slice"].as_f32().unwrap();
    assert_eq!(sd["big_slice"].shape, vec![3, 2]);
    for r in 0..3 {
        for c in 0..2 {
            assert_eq!(slice[r * 2 + c], big[(r + 1) * 4 + (c + 1)]);
        }
    }
    assert_eq!(sd["big_row"].as_f32().unwrap(), &big[12..16]);
    let col: Vec<f32> = (0..5).map(|r| big[r * 4 + 2]).collect();
    assert_eq!(sd["big_col"].as_f32().unwrap(), col.as_slice());
    // Stride-0 broadcast: each row repeats one value.
    let e = sd["expanded"].as_f32().unwrap();
    for r in 0..3 {
        assert!(e[r * 4..r * 4 + 4].iter().all(|&x| x == e[r * 4]));
    }
    let ids = sd["ids_i64"].as_i64().unwrap();
    assert_eq!(ids, &[0, -7, (1i64 << 40) + 3, 9_007_199_254_740_993]);
    assert_eq!(sd["ids_i64"].dtype, DType::I64);
    assert_eq!(sd["ids_i32"].as_i64().unwrap(), &[1, -2, 3, i32::MAX as i64]);
    assert_eq!(sd["flags"].as_i64().unwrap(), &[1, 0, 1]);
    assert_eq!(sd["u8"].as_i64().unwrap(), &[0, 255, 7]);
    assert_eq!(sd["scalar"].shape, Vec::<usize>::new());
    assert_eq!(sd["scalar"].as_f32().unwrap(), &[3.25]);
    assert_eq!(sd["empty"].shape, vec![0, 3]);
    assert!(sd["empty"].data.is_empty());
    assert_eq!(sd["half"].dtype, DType::F16);
    assert_eq!(sd["bf16"].dtype, DType::BF16);
    assert_eq!(sd["double"].dtype, DType::F64);
}

#[test]
fn whole_checkpoint_and_bare_state_dict() {
    let mut ck = TorchCheckpoint::open(fixtures().join("reader_test.ckpt")).unwrap();
    assert_eq!(ck.top_level_keys(), vec!["model_state_dict", "epoch", "note", "optimizer_state_dict", "nested"]);
    assert_eq!(ck.get("epoch").unwrap(), &PyValue::Int(12));
    assert_eq!(ck.get("note").unwrap(), &PyValue::Str("reader fixture".into()));
    let all = ck.state_dict("").unwrap();
    assert!(all.contains_key("model_state_dict.linear.weight"));
    assert!(all.contains_key("optimizer_state_dict.state.0.exp_avg"));
    assert_eq!(all["optimizer_state_dict.state.0.step"].as_f32().unwrap(), &[3.0]);
    assert_eq!(all["nested.inner.w"].as_f32().unwrap(), &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);

    let bare = read_torch(fixtures().join("bare_state_dict.ckpt"), "").unwrap();
    let wrapped = read_torch(fixtures().join("reader_test.ckpt"), "model_state_dict").unwrap();
    assert_eq!(bare, wrapped);
}

#[test]
fn key_path_errors_name_the_file_and_the_keys() {
    let p = fixtures().join("reader_test.ckpt");
    let e = read_torch(&p, "model").unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, WeightsError::KeyPath { .. }), "{msg}");
    assert!(msg.contains("reader_test.ckpt") && msg.contains("model_state_dict"), "{msg}");
    let e = read_torch(&p, "epoch").unwrap_err().to_string();
    assert!(e.contains("int") && e.contains("not a dictionary"), "{e}");
}

#[test]
fn damaged_files_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    for name in ["reader_test.ckpt", "reader_test_legacy.ckpt", "reader_test_p4.ckpt"] {
        let bytes = std::fs::read(fixtures().join(name)).unwrap();
        // Every truncation fails cleanly.
        for cut in (0..bytes.len()).step_by(37) {
            let p = dir.path().join(format!("cut_{cut}_{name}"));
            std::fs::write(&p, &bytes[..cut]).unwrap();
            let r = read_torch(&p, "model_state_dict");
            assert!(r.is_err(), "{name} cut at {cut} was accepted");
            let msg = r.unwrap_err().to_string();
            assert!(msg.contains(&format!("cut_{cut}_{name}")), "{msg}");
        }
        // Flipped bytes may or may not be detected, but never panic.
        for at in (0..bytes.len()).step_by(13) {
            let mut b = bytes.clone();
            b[at] ^= 0x5a;
            let p = dir.path().join("flip.ckpt");
            std::fs::write(&p, &b).unwrap();
            let _ = read_torch(&p, "model_state_dict");
            let _ = read_torch(&p, "");
        }
    }
    let p = dir.path().join("text.ckpt");
    std::fs::write(&p, b"this is not a checkpoint\n").unwrap();
    let e = read_torch(&p, "").unwrap_err();
    assert!(matches!(e, WeightsError::Format { .. }) && e.to_string().contains("not a PyTorch checkpoint"), "{e}");
    let p = dir.path().join("empty.ckpt");
    std::fs::write(&p, b"").unwrap();
    assert!(read_torch(&p, "").is_err());
    let e = read_torch(dir.path().join("absent.ckpt"), "").unwrap_err();
    assert!(matches!(e, WeightsError::Io { .. }), "{e}");
    // A zip archive that is not a torch checkpoint: safetensors bytes are not a zip either.
    let e = read_torch(fixtures().join("reader_test.expected.safetensors"), "").unwrap_err();
    assert!(matches!(e, WeightsError::Format { .. }), "{e}");
    // A damaged safetensors file.
    let st = std::fs::read(fixtures().join("reader_test.expected.safetensors")).unwrap();
    let p = dir.path().join("cut.safetensors");
    std::fs::write(&p, &st[..st.len() / 2]).unwrap();
    let e = read_safetensors(&p).unwrap_err();
    assert!(e.to_string().contains("cut.safetensors"), "{e}");
}

fn manifest() -> serde_json::Value {
    let text = std::fs::read_to_string(cellplm().join("manifest.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn cellplm_checkpoints_have_the_documented_keys_and_shapes() {
    let m = manifest();
    for model in ["cellplm_small_gmvae", "cellplm_small_vae", "cellplm_small_ae"] {
        let sd = read_torch(cellplm().join(format!("{model}.best.ckpt")), "model_state_dict").unwrap();
        let listed = m["models"][model]["state_dict"].as_array().unwrap();
        assert_eq!(sd.len(), listed.len(), "{model}");
        for entry in listed {
            let key = entry[0].as_str().unwrap();
            let shape: Vec<usize> = entry[1].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            let t = sd.get(key).unwrap_or_else(|| panic!("{model}: {key} missing"));
            assert_eq!(t.shape, shape, "{model}: {key}");
            assert_eq!(t.dtype, DType::F32, "{model}: {key}");
        }
    }
}

#[test]
fn cellplm_checkpoints_match_safetensors_exports() {
    let ae = read_torch(cellplm().join("cellplm_small_ae.best.ckpt"), "model_state_dict").unwrap();
    let ae_st = read_safetensors(cellplm().join("cellplm_small_ae.state_dict.safetensors")).unwrap();
    assert_eq!(ae.len(), ae_st.len());
    for (k, t) in &ae_st {
        assert_same(k, &ae[k], t);
    }
    let gm = read_torch(cellplm().join("cellplm_small_gmvae.best.ckpt"), "model_state_dict").unwrap();
    let subset = read_safetensors(cellplm().join("cellplm_small_gmvae.state_subset.safetensors")).unwrap();
    assert!(subset.len() >= 5);
    for (k, t) in &subset {
        assert_same(k, &gm[k], t);
    }
}

#[test]
fn safetensors_round_trip_with_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let mut sd = StateDict::new();
    sd.insert(
        "a.weight".into(),
        TensorData::from_f32(vec![2, 3], vec![1.0, -2.5, 3.0, 0.0, f32::MIN_POSITIVE, 7.0]).unwrap(),
    );
    sd.insert("ids".into(), TensorData::from_i64(vec![3], vec![-1, i64::MAX, 4]).unwrap());
    sd.insert("s".into(), TensorData::from_f32(vec![], vec![0.5]).unwrap());
    let p = dir.path().join("x.safetensors");
    let meta = [("format".to_string(), "pt".to_string())].into_iter().collect();
    write_safetensors(&p, &sd, Some(meta)).unwrap();
    let (back, meta) = read_safetensors_with_metadata(&p).unwrap();
    assert_eq!(back, sd);
    assert_eq!(meta.get("format").map(String::as_str), Some("pt"));
    // Reading a torch checkpoint and writing it as safetensors keeps the values (dtype becomes f32/i64).
    let ck = read_torch(fixtures().join("reader_test.ckpt"), "model_state_dict").unwrap();
    let p2 = dir.path().join("ck.safetensors");
    write_safetensors(&p2, &ck, None).unwrap();
    let back = read_safetensors(&p2).unwrap();
    for (k, t) in &ck {
        assert_eq!(back[k].shape, t.shape, "{k}");
        assert_eq!(back[k].data, t.data, "{k}");
    }
    assert!(TensorData::from_f32(vec![2, 2], vec![1.0]).is_err());
}

#[test]
fn load_report_accounts_for_every_tensor() {
    let p = fixtures().join("reader_test.ckpt");
    let sd = read_torch(&p, "model_state_dict").unwrap();
    let wanted: Vec<(&str, &[usize])> = vec![("linear.weight", &[4, 3]), ("linear.bias", &[5]), ("absent", &[1])];
    let r = LoadReport::check(&sd, wanted);
    assert_eq!(r.loaded, vec!["linear.weight"]);
    assert_eq!(r.missing, vec!["absent"]);
    assert_eq!(r.shape_mismatch.len(), 1);
    assert_eq!(r.shape_mismatch[0].found, vec![4]);
    assert_eq!(r.skipped.len(), sd.len() - 2);
    assert!(!r.is_complete());
    let e = r.ensure_complete(&p).unwrap_err().to_string();
    assert!(e.contains("reader_test.ckpt") && e.contains("absent") && e.contains("linear.bias"), "{e}");

    let mut l = TensorLoader::new(&p, sd.clone());
    assert_eq!(l.shape("big"), Some(&[5usize, 4][..]));
    let w = l.take_f32("linear.weight", &[4, 3]).unwrap();
    assert_eq!(w, sd["linear.weight"].as_f32().unwrap());
    assert!(l.take_f32("ids_i64", &[4]).is_none());
    assert!(!l.contains("linear.weight"));
    let r = l.finish();
    assert_eq!(r.loaded, vec!["linear.weight"]);
    assert_eq!(r.missing, vec!["ids_i64 (not floating point)"]);
    assert_eq!(r.skipped.len(), sd.len() - 2);

    let mut l = TensorLoader::new(&p, sd.clone());
    for (k, t) in &sd {
        let shape = t.shape.clone();
        assert!(l.take(k, &shape).is_some());
    }
    let r = l.finish_complete().unwrap();
    assert!(r.skipped.is_empty() && r.is_complete());
}

#[test]
fn cellplm_outputs_and_input_are_readable_and_consistent() {
    let m = manifest();
    let input = read_safetensors(cellplm().join("input.safetensors")).unwrap();
    let (n, g) = (m["cells"].as_u64().unwrap() as usize, m["genes"].as_u64().unwrap() as usize);
    assert_eq!(input["x.shape"].as_i64().unwrap(), &[n as i64, g as i64]);
    // CSR and dense copies of the counts agree.
    let indptr = input["x.indptr"].as_i64().unwrap();
    let indices = input["x.indices"].as_i64().unwrap();
    let data = input["x.data"].as_f32().unwrap();
    let dense = input["x.dense"].as_f32().unwrap();
    let mut rebuilt = vec![0f32; n * g];
    for r in 0..n {
        for p in indptr[r] as usize..indptr[r + 1] as usize {
            rebuilt[r * g + indices[p] as usize] = data[p];
        }
    }
    assert_eq!(rebuilt, dense);
    for model in ["cellplm_small_gmvae", "cellplm_small_vae", "cellplm_small_ae"] {
        let out = read_safetensors(cellplm().join(format!("{model}.outputs.safetensors"))).unwrap();
        let listed = m["models"][model]["outputs"].as_array().unwrap();
        assert_eq!(out.len(), listed.len(), "{model}");
        for entry in listed {
            let key = entry[0].as_str().unwrap();
            let shape: Vec<usize> = entry[1].as_array().unwrap().iter().map(|d| d.as_u64().unwrap() as usize).collect();
            assert_eq!(out[key].shape, shape, "{model}: {key}");
        }
        let latent = match model {
            "cellplm_small_gmvae" => Some("gmvae.mean"),
            "cellplm_small_vae" => Some("vae.mu"),
            _ => None,
        };
        if let Some(k) = latent {
            assert_eq!(out["emb"], out[k], "{model}: embedding is the latent mean");
        }
    }
}

/// The first stage of the documented forward pass (fixtures/cellplm/README.md), computed here in plain
/// Rust from the checkpoint read by this crate: log1p(counts) @ gene embedding → Linear → ReLU → GroupNorm(4).
#[test]
fn cellplm_embedder_stage_recomputed_from_the_checkpoint() {
    let input = read_safetensors(cellplm().join("input.safetensors")).unwrap();
    let counts = input["x.dense"].as_f32().unwrap();
    for model in ["cellplm_small_gmvae", "cellplm_small_vae", "cellplm_small_ae"] {
        let sd = read_torch(cellplm().join(format!("{model}.best.ckpt")), "model_state_dict").unwrap();
        let out = read_safetensors(cellplm().join(format!("{model}.outputs.safetensors"))).unwrap();
        let emb = sd["embedder.feat_enc.emb"].as_f32().unwrap();
        let (genes, d) = (sd["embedder.feat_enc.emb"].shape[0], sd["embedder.feat_enc.emb"].shape[1]);
        let w = sd["embedder.extra_linear.0.weight"].as_f32().unwrap(); // [out, in]
        let b = sd["embedder.extra_linear.0.bias"].as_f32().unwrap();
        let gw = sd["embedder.extra_linear.3.weight"].as_f32().unwrap();
        let gb = sd["embedder.extra_linear.3.bias"].as_f32().unwrap();
        let want = out["embedder.out"].as_f32().unwrap();
        let cells = counts.len() / genes;
        let mut worst = 0f64;
        for c in 0..cells {
            let mut feat = vec![0f64; d];
            for gi in 0..genes {
                let x = (counts[c * genes + gi] as f64).ln_1p();
                if x != 0.0 {
                    for j in 0..d {
                        feat[j] += x * emb[gi * d + j] as f64;
                    }
                }
            }
            let mut h: Vec<f64> = (0..d)
                .map(|o| (b[o] as f64 + (0..d).map(|i| w[o * d + i] as f64 * feat[i]).sum::<f64>()).max(0.0))
                .collect();
            let gs = d / 4;
            for grp in 0..4 {
                let s = &mut h[grp * gs..(grp + 1) * gs];
                let mean = s.iter().sum::<f64>() / gs as f64;
                let var = s.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / gs as f64;
                for (k, v) in s.iter_mut().enumerate() {
                    let ch = grp * gs + k;
                    *v = (*v - mean) / (var + 1e-5).sqrt() * gw[ch] as f64 + gb[ch] as f64;
                }
            }
            for j in 0..d {
                worst = worst.max((h[j] - want[c * d + j] as f64).abs());
            }
        }
        assert!(worst < 1e-4, "{model}: embedder output differs by {worst}");
    }
}

#[test]
fn read_weights_detects_the_format() {
    let a = sclm_weights::read_weights(fixtures().join("reader_test.ckpt"), "model_state_dict").unwrap();
    let b = read_torch(fixtures().join("reader_test.ckpt"), "model_state_dict").unwrap();
    assert_eq!(a, b);
    let st = sclm_weights::read_weights(fixtures().join("reader_test.expected.safetensors"), "").unwrap();
    assert_eq!(st, expected());
    let nested =
        sclm_weights::read_weights(fixtures().join("reader_test.expected.safetensors"), "nested/inner").unwrap();
    assert_eq!(nested.keys().collect::<Vec<_>>(), vec!["w"]);
    assert!(sclm_weights::read_weights(fixtures().join("reader_test.expected.safetensors"), "nope").is_err());
}
