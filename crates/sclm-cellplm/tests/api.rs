//! Model directory round trip, AnnData embedding, covariates and positional encoding on a tiny
//! random model.
use sclm_cellplm::embed::{embed_chunk, EmbedOptions, GeneMapping, PieceOptions};
use sclm_cellplm::model::to_vec;
use sclm_cellplm::CellPlmModel;
use sclm_cellplm::{CellPlm, CellPlmConfig, Covariates, GroupInput, LatentKind};
use sclm_data::{AnnData, Column, CsrMatrix, DataFrame, Dense, Matrix};
use sclm_nn::embedding::CsrRows;

/// Embeds through the model layer (`sclm_model::embed` on a [`CellPlmModel`] with the default
/// registry: groups by obs `batch`).
fn embed(
    model: &CellPlm,
    a: &AnnData,
    opts: &EmbedOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<Dense<f32>, sclm_model::ModelError> {
    let m = CellPlmModel::new(model.clone(), Default::default());
    sclm_model::embed(&m, a, opts, progress).map(|(e, _)| e)
}

fn tiny(latent: LatentKind, pe: bool) -> CellPlmConfig {
    let genes: Vec<String> = (0..12).map(|i| format!("ENSG{i:05}")).collect();
    let mut c = CellPlmConfig::small(genes);
    c.enc_hid = 16;
    c.enc_head = 4;
    c.post_latent_dim = 8;
    c.qzyx_hidden = 16;
    c.num_clusters = 3;
    c.dec_hid = 16;
    c.batch_num = 3;
    c.dataset_num = 2;
    c.latent_mod = latent;
    c.positional_encoding = pe;
    c
}

/// 10 cells × 14 dataset genes (dataset gene k = vocabulary gene k − 2; the first two are not
/// in the vocabulary), integer counts.
fn counts() -> CsrMatrix {
    let mut d = Dense::zeros(10, 14);
    for r in 0..10 {
        for c in 0..14 {
            if (r * 7 + c * 3) % 4 != 0 {
                d.data[r * 14 + c] = ((r + 2 * c) % 6) as f32;
            }
        }
    }
    CsrMatrix::from_dense(&d)
}

fn adata(batch: Option<Vec<&str>>) -> AnnData {
    let mut a = AnnData::new(Matrix::Csr(counts()));
    a.var = DataFrame::new((0..14).map(|i| format!("ENSG{:05}", i as i64 - 2 + 100 * ((i < 2) as i64))).collect());
    a.obs = DataFrame::new((0..10).map(|i| format!("c{i}")).collect());
    if let Some(b) = batch {
        a.obs.insert("batch", Column::categorical_from_labels(&b)).unwrap();
    }
    a
}

#[test]
fn save_dir_and_load_dir_round_trip_exactly() {
    let dev = sclm_nn::cpu_device();
    for kind in [LatentKind::Gmvae, LatentKind::Vae, LatentKind::Ae] {
        let mut model = CellPlm::new(&tiny(kind, true), &dev).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("model");
        model.save_dir(&dir).unwrap();
        // Saving again replaces the directory atomically.
        model.save_dir(&dir).unwrap();
        let names: Vec<String> = std::fs::read_dir(tmp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["model".to_string()]);
        for f in ["model.json", "config.json", "model.safetensors", "genes.txt"] {
            assert!(dir.join(f).exists(), "{f}");
        }
        let (mut back, pre) = CellPlm::load_dir(&dir, &dev).unwrap();
        assert_eq!(pre.transform, "log1p");
        assert_eq!(back.config(), model.config());
        assert_eq!(back.to_state_dict().unwrap(), model.to_state_dict().unwrap());
        let a = adata(Some(vec!["x", "y", "x", "y", "x", "x", "y", "x", "x", "y"]));
        let opts = EmbedOptions::default();
        let e1 = embed(&model, &a, &opts, &mut |_| {}).unwrap();
        let e2 = embed(&back, &a, &opts, &mut |_| {}).unwrap();
        assert_eq!(e1, e2);
    }
}

#[test]
fn load_rejects_missing_and_mismatched_tensors() {
    let dev = sclm_nn::cpu_device();
    let mut model = CellPlm::new(&tiny(LatentKind::Gmvae, false), &dev).unwrap();
    let sd = model.to_state_dict().unwrap();
    let mut missing = sd.clone();
    missing.remove("encoder.layers.1.norm2.bias");
    let err = CellPlm::from_state_dict(model.config(), missing, "x.ckpt", &dev).unwrap_err().to_string();
    assert!(err.contains("encoder.layers.1.norm2.bias") && err.contains("x.ckpt"), "{err}");
    let mut wrong = sd.clone();
    wrong.insert(
        "decoder.out_layer.dec_disp".into(),
        sclm_weights::TensorData::from_f32(vec![5], vec![0.0; 5]).unwrap(),
    );
    let err = CellPlm::from_state_dict(model.config(), wrong, "x.ckpt", &dev).unwrap_err().to_string();
    assert!(err.contains("dec_disp"), "{err}");
    let mut extra = sd;
    extra.insert("embedder.norm0.weight".into(), sclm_weights::TensorData::from_f32(vec![16], vec![1.0; 16]).unwrap());
    let (_, report) = CellPlm::from_state_dict(model.config(), extra, "x.ckpt", &dev).unwrap();
    assert_eq!(report.skipped, vec!["embedder.norm0.weight".to_string()]);
}

#[test]
fn embed_groups_cells_and_keeps_order() {
    let dev = sclm_nn::cpu_device();
    let model = CellPlm::new(&tiny(LatentKind::Gmvae, false), &dev).unwrap();
    let labels = vec!["x", "y", "x", "y", "x", "x", "y", "x", "x", "y"];
    let a = adata(Some(labels.clone()));
    let mut calls = Vec::new();
    let e = embed(&model, &a, &EmbedOptions::default(), &mut |d| calls.push(d)).unwrap();
    assert_eq!((e.nrows, e.ncols), (10, 8));
    assert_eq!(calls, vec![6, 10]);
    // Group "y" alone gives the same rows: groups do not see each other.
    let ys: Vec<usize> = (0..10).filter(|&r| labels[r] == "y").collect();
    let sub = a.select_obs(&ys);
    let ey = embed(&model, &sub, &EmbedOptions::default(), &mut |_| {}).unwrap();
    for (i, &r) in ys.iter().enumerate() {
        for (u, v) in ey.row(i).iter().zip(e.row(r)) {
            assert!((u - v).abs() < 1e-5);
        }
    }
    // One group when the key is absent: cells now attend to all others, so results change.
    let one = embed(&model, &adata(None), &EmbedOptions::default(), &mut |_| {}).unwrap();
    assert!(one.data.iter().zip(&e.data).any(|(u, v)| (u - v).abs() > 1e-4));
    // Pieces: at most 4 cells per forward → 10 cells in pieces of 4, 3, 3.
    let mut calls = Vec::new();
    let opts =
        EmbedOptions { pieces: PieceOptions { max_cells_per_forward: 4, ..Default::default() }, ..Default::default() };
    embed(&model, &adata(None), &opts, &mut |d| calls.push(d)).unwrap();
    assert_eq!(calls, vec![4, 7, 10]);
    // A precomputed mapping equal to the name match gives the same result; the streaming entry
    // point does too.
    let (by_name, report) = GeneMapping::for_dataset(model.genes(), &a.var, None).unwrap();
    assert_eq!(report.unmatched_dataset, vec!["ENSG00098".to_string(), "ENSG00099".to_string()]);
    assert_eq!(by_name.n_matched(), 12);
    assert_eq!(by_name.vocab_to_col()[0], Some(2));
    let m = GeneMapping::new((0..12).map(|v| Some(v + 2)).collect(), 14).unwrap();
    assert_eq!(m, by_name);
    let groups: Vec<String> = labels.iter().map(|s| s.to_string()).collect();
    let s = embed_chunk(&model, &counts(), Some(&groups), None, &m, &PieceOptions::default(), &mut |_| {}).unwrap();
    assert_eq!(s, e);
}

#[test]
fn embed_rejects_bad_input() {
    let dev = sclm_nn::cpu_device();
    let model = CellPlm::new(&tiny(LatentKind::Ae, false), &dev).unwrap();
    let mut a = adata(None);
    if let Matrix::Csr(c) = &mut a.x {
        c.data[3] = 1.5;
    }
    let err = embed(&model, &a, &EmbedOptions::default(), &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("integer counts"), "{err}");
    if let Matrix::Csr(c) = &mut a.x {
        c.data[3] = -1.0;
    }
    assert!(embed(&model, &a, &EmbedOptions::default(), &mut |_| {}).is_err());
    let mut b = adata(None);
    b.var = DataFrame::new((0..14).map(|i| format!("SYM{i}")).collect());
    let err = embed(&model, &b, &EmbedOptions::default(), &mut |_| {}).unwrap_err().to_string();
    assert!(err.contains("vocabulary"), "{err}");
    assert!(GeneMapping::new(vec![Some(20); 12], 14).is_err());
}

#[test]
fn unknown_covariate_uses_sum_of_rows_and_bad_ids_fail() {
    let dev = sclm_nn::cpu_device();
    let model = CellPlm::new(&tiny(LatentKind::Vae, false), &dev).unwrap();
    let x = counts();
    // Counts over the vocabulary directly: the last 12 columns.
    let sub = x.select_cols(&(2..14).collect::<Vec<_>>());
    let rows = CsrRows::new(12, &sub.indptr, &sub.indices, &sub.data).unwrap();
    let none: Vec<Option<usize>> = vec![None; 10];
    let all_unknown =
        GroupInput { counts: rows, coords: None, covariates: Covariates { batch: Some(&none), dataset: None } };
    let absent = GroupInput { counts: rows, coords: None, covariates: Covariates::default() };
    let h1 = to_vec(model.forward(&all_unknown, true).unwrap().decoder.unwrap().hidden);
    let h2 = to_vec(model.forward(&absent, true).unwrap().decoder.unwrap().hidden);
    for (a, b) in h1.iter().zip(&h2) {
        assert!((a - b).abs() < 1e-5);
    }
    let ids: Vec<Option<usize>> = (0..10).map(|i| Some(i % 3)).collect();
    let known = GroupInput { counts: rows, coords: None, covariates: Covariates { batch: Some(&ids), dataset: None } };
    let h3 = to_vec(model.forward(&known, true).unwrap().decoder.unwrap().hidden);
    assert!(h1.iter().zip(&h3).any(|(a, b)| (a - b).abs() > 1e-4));
    let bad: Vec<Option<usize>> = vec![Some(3); 10];
    let e = GroupInput { counts: rows, coords: None, covariates: Covariates { batch: Some(&bad), dataset: None } };
    assert!(model.forward(&e, true).unwrap_err().to_string().contains("out of range"));
}

#[test]
fn positional_encoding_changes_embeddings_only_when_on() {
    let dev = sclm_nn::cpu_device();
    let sub = counts().select_cols(&(2..14).collect::<Vec<_>>());
    let rows = CsrRows::new(12, &sub.indptr, &sub.indices, &sub.data).unwrap();
    let coords: Vec<[f32; 2]> = (0..10).map(|i| [i as f32, (i * i) as f32]).collect();
    let missing = vec![[-1.0f32, -1.0]; 10];
    let on = CellPlm::new(&tiny(LatentKind::Ae, true), &dev).unwrap();
    let a = to_vec(on.embed_group(&rows, Some(&coords)).unwrap());
    let b = to_vec(on.embed_group(&rows, Some(&missing)).unwrap());
    let c = to_vec(on.embed_group(&rows, None).unwrap());
    assert!(a.iter().zip(&b).any(|(u, v)| (u - v).abs() > 1e-4));
    assert_eq!(b, c);
    let mut off_cfg = tiny(LatentKind::Ae, false);
    off_cfg.positional_encoding = false;
    let off = CellPlm::new(&off_cfg, &dev).unwrap();
    assert_eq!(to_vec(off.embed_group(&rows, Some(&coords)).unwrap()), to_vec(off.embed_group(&rows, None).unwrap()));
}

#[test]
fn published_architecture_has_the_published_tensor_names() {
    // The published 20230926_85M layout with a small vocabulary (the gene table is the only
    // vocabulary-sized part besides the decoder output): 105 published tensors minus the unused
    // `embedder.norm0.{weight,bias}` and `embedder.pe_enc.{missing_pe,pe_enc.weight}`.
    let genes: Vec<String> = (0..40).map(|i| format!("G{i}")).collect();
    let mut c = CellPlmConfig::published_85m(genes);
    c.positional_encoding = false;
    let dev = sclm_nn::cpu_device();
    let mut m = CellPlm::new(&c, &dev).unwrap();
    let t = m.expected_tensors();
    assert_eq!(t.len(), 101);
    let find = |k: &str| t.iter().find(|(n, _)| n == k).map(|(_, s)| s.clone()).unwrap();
    assert_eq!(find("latent.layers.1.inference.inference_qzyx.0.weight"), vec![512, 1024 + 16]);
    assert_eq!(find("decoder.covariate_layers.0.batch.0.weight"), vec![12_596, 1024]);
    assert_eq!(find("decoder.covariate_layers.0.dataset.0.weight"), vec![484, 1024]);
    assert_eq!(find("encoder.layers.3._ff_block.0.weight"), vec![2048, 1024]);
    assert_eq!(find("embedder.feat_enc.emb"), vec![40, 1024]);
    let values: usize = t.iter().map(|(_, s)| s.iter().product::<usize>()).sum();
    assert_eq!(values, m.num_params());
    // With the positional encoding on, the placeholder is one more tensor.
    c.positional_encoding = true;
    assert_eq!(CellPlm::new(&c, &dev).unwrap().expected_tensors().len(), 102);
}

#[test]
fn sampling_mode_varies_and_deterministic_mode_does_not() {
    let dev = sclm_nn::cpu_device();
    let sub = counts().select_cols(&(2..14).collect::<Vec<_>>());
    let rows = CsrRows::new(12, &sub.indptr, &sub.indices, &sub.data).unwrap();
    let mut c = tiny(LatentKind::Gmvae, false);
    let det = CellPlm::new(&c, &dev).unwrap();
    let a = to_vec(det.embed_group(&rows, None).unwrap());
    assert_eq!(a, to_vec(det.embed_group(&rows, None).unwrap()));
    c.deterministic = false;
    let sd = {
        let mut d = det;
        d.to_state_dict().unwrap()
    };
    let (sampling, _) = CellPlm::from_state_dict(&c, sd, "mem", &dev).unwrap();
    let runs: Vec<Vec<f32>> = (0..5).map(|_| to_vec(sampling.embed_group(&rows, None).unwrap())).collect();
    assert!(runs.iter().any(|r| r.iter().zip(&runs[0]).any(|(u, v)| (u - v).abs() > 1e-6)));
}

/// Annotation fine-tuning starts from the published pipeline's model: dropout 0.5 everywhere,
/// a linear latent (fresh in place of a GMVAE's), every other pretrained weight copied.
#[test]
fn finetuning_model_follows_the_published_pipeline() {
    use sclm_cellplm::annotate::CellPlmClassifier;
    use sclm_nn::burn::store::ModuleSnapshot;
    let dev = sclm_nn::cpu_device();
    // Tensor name → its bytes.
    let tensors = |m: &CellPlm| -> std::collections::BTreeMap<String, Vec<u8>> {
        m.collect(None, None, true).into_iter().map(|t| (t.name.clone(), t.to_bytes().unwrap().to_vec())).collect()
    };
    for latent in [LatentKind::Gmvae, LatentKind::Ae] {
        let plm = CellPlm::new(&tiny(latent, false), &dev).unwrap();
        let (clf, left_out) = CellPlmClassifier::for_finetuning(&plm, 4, 0.5).unwrap();
        assert_eq!(clf.plm.config().latent_mod, LatentKind::Ae);
        assert_eq!(clf.plm.config().model_dropout, 0.5);
        let (before, after) = (tensors(&plm), tensors(&clf.plm));
        for (name, values) in &after {
            if name.starts_with("latent.") && latent != LatentKind::Ae {
                assert!(!before.contains_key(name), "{name} should be new");
            } else {
                assert_eq!(Some(values), before.get(name), "{latent:?}: {name} not copied");
            }
        }
        let old_latent: Vec<&String> = before.keys().filter(|k| k.starts_with("latent.")).collect();
        match latent {
            LatentKind::Ae => assert!(left_out.is_empty(), "{left_out:?}"),
            _ => assert_eq!(left_out.iter().collect::<Vec<_>>(), old_latent),
        }
        // With a linear latent the backbone embeds exactly as the pretrained model (dropout is
        // off outside training).
        if latent == LatentKind::Ae {
            let (ptr, idx, val) =
                (vec![0usize, 3, 5, 8], vec![0u32, 4, 9, 2, 11, 1, 5, 7], vec![3f32, 1., 7., 2., 2., 5., 1., 4.]);
            let rows = CsrRows::new(12, &ptr, &idx, &val).unwrap();
            let want = to_vec(plm.embed_group(&rows, None).unwrap());
            assert_eq!(to_vec(clf.plm.embed_group(&rows, None).unwrap()), want);
        }
    }
}
