//! Parity with the published CellPLM code: the fixtures in `fixtures/cellplm` hold three small
//! random-weight checkpoints (GMVAE, VAE, AE latents), an input and the reference outputs and
//! intermediate activations produced by the authors' PyTorch code (see the README there).
use std::collections::BTreeMap;
use std::path::PathBuf;

use sclm_cellplm::model::to_vec;
use sclm_cellplm::{CellPlm, CellPlmConfig, Covariates, GroupInput};
use sclm_nn::embedding::CsrRows;
use sclm_weights::StateDict;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures/cellplm")
}

struct Input {
    indptr: Vec<usize>,
    indices: Vec<u32>,
    data: Vec<f32>,
    n_genes: usize,
    group: Vec<i64>,
    batch_cov: Vec<i64>,
}

fn read_input() -> Input {
    let sd = sclm_weights::read_safetensors(fixtures().join("input.safetensors")).unwrap();
    let ints = |k: &str| sd[k].as_i64().unwrap().to_vec();
    let shape = ints("x.shape");
    Input {
        indptr: ints("x.indptr").into_iter().map(|v| v as usize).collect(),
        indices: ints("x.indices").into_iter().map(|v| v as u32).collect(),
        data: sd["x.data"].as_f32().unwrap().to_vec(),
        n_genes: shape[1] as usize,
        group: ints("obs.group"),
        batch_cov: ints("obs.batch_covariate"),
    }
}

/// Rows of one group as a CSR block.
fn group_rows(inp: &Input, rows: &[usize]) -> (Vec<usize>, Vec<u32>, Vec<f32>) {
    let (mut p, mut i, mut d) = (vec![0], vec![], vec![]);
    for &r in rows {
        for k in inp.indptr[r]..inp.indptr[r + 1] {
            i.push(inp.indices[k]);
            d.push(inp.data[k]);
        }
        p.push(i.len());
    }
    (p, i, d)
}

/// Collected outputs in original cell order (per-cell tensors) or per group (scalars).
#[derive(Default)]
struct Collected {
    per_cell: BTreeMap<String, (usize, Vec<f32>)>,
    per_group: BTreeMap<String, Vec<f32>>,
}

impl Collected {
    fn put_rows(&mut self, key: &str, rows: &[usize], n_total: usize, values: Vec<f32>) {
        let width = values.len() / rows.len();
        let e = self.per_cell.entry(key.to_string()).or_insert_with(|| (width, vec![f32::NAN; n_total * width]));
        for (i, &r) in rows.iter().enumerate() {
            e.1[r * width..(r + 1) * width].copy_from_slice(&values[i * width..(i + 1) * width]);
        }
    }
    fn put_group(&mut self, key: &str, g: usize, v: f32) {
        let e = self.per_group.entry(key.to_string()).or_insert_with(|| vec![f32::NAN; 2]);
        e[g] = v;
    }
}

fn max_abs(a: &[f32], b: &[f32]) -> (f32, f32) {
    assert_eq!(a.len(), b.len());
    let err = a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    let scale = b.iter().map(|v| v.abs()).fold(0f32, f32::max);
    assert!(a.iter().all(|v| v.is_finite()), "non-finite output");
    (err, scale)
}

fn run(name: &str) {
    let dir = fixtures();
    let config = CellPlmConfig::from_json_file(dir.join(format!("cellplm_small_{name}.config.json"))).unwrap();
    let device = sclm_nn::cpu_device();
    let (model, report) =
        CellPlm::load_torch(dir.join(format!("cellplm_small_{name}.best.ckpt")), &config, &device).unwrap();
    assert!(report.is_complete());
    assert!(report.skipped.iter().any(|k| k == "embedder.norm0.weight"), "{:?}", report.skipped);
    assert!(report.skipped.iter().all(|k| k.starts_with("embedder.norm0.") || k.starts_with("embedder.pe_enc.")));
    let reference: StateDict =
        sclm_weights::read_safetensors(dir.join(format!("cellplm_small_{name}.outputs.safetensors"))).unwrap();

    let inp = read_input();
    let n = inp.group.len();
    let mut got = Collected::default();
    for g in 0..2usize {
        let rows: Vec<usize> = (0..n).filter(|&r| inp.group[r] == g as i64).collect();
        let (p, i, d) = group_rows(&inp, &rows);
        let counts = CsrRows::new(inp.n_genes, &p, &i, &d).unwrap();
        let cov: Vec<Option<usize>> = rows.iter().map(|&r| Some(inp.batch_cov[r] as usize)).collect();
        let with_cov = GroupInput { counts, coords: None, covariates: Covariates { batch: Some(&cov), dataset: None } };
        let out = model.forward(&with_cov, true).unwrap();
        got.put_rows("emb", &rows, n, to_vec(out.embedding.clone()));
        // The zero-shot path gives the same embedding.
        let e2 = to_vec(model.embed_group(&counts, None).unwrap());
        assert_eq!(e2, to_vec(out.embedding.clone()));
        // So does the fast inference path (`sclm embed`), within float rounding.
        let fast = model.inference();
        assert!(fast.is_fast());
        let e3 = fast.embed_group(&counts, None).unwrap();
        let worst = e2.iter().zip(&e3).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-5, "fast path differs by {worst}");
        for (k, t) in &out.activations {
            got.put_rows(k, &rows, n, to_vec(t.clone()));
        }
        got.put_group("latent_loss", g, to_vec(out.latent_loss.clone())[0]);
        for (k, t) in &out.latent_terms {
            got.put_group(k, g, to_vec(t.clone())[0]);
        }
        for (prefix, o) in [
            ("decoder", out),
            ("decoder_nocov", {
                let no_cov = GroupInput { counts, coords: None, covariates: Covariates::default() };
                model.forward(&no_cov, true).unwrap()
            }),
        ] {
            let dec = o.decoder.unwrap();
            got.put_group(&format!("{prefix}.nb_loss"), g, to_vec(model.nb_loss(&counts, &dec).unwrap())[0]);
            got.put_rows(&format!("{prefix}.hidden"), &rows, n, to_vec(dec.hidden));
            got.put_rows(&format!("{prefix}.mean"), &rows, n, to_vec(dec.mean));
            got.put_rows(&format!("{prefix}.disp"), &rows, n, to_vec(dec.disp.unwrap()));
        }
    }

    let mut checked = 0;
    for (key, t) in &reference {
        let want = t.as_f32().unwrap();
        let (err, scale, bound) = if let Some((_, v)) = got.per_cell.get(key) {
            let (e, s) = max_abs(v, want);
            (e, s, 1e-4 * s.max(1.0))
        } else if let Some(v) = got.per_group.get(key) {
            let (e, s) = max_abs(v, want);
            // NB losses are ~85: relative tolerance.
            let bound = if key.ends_with("nb_loss") { 1e-5 * s.max(1.0) } else { 1e-4 * s.max(1.0) };
            (e, s, bound)
        } else {
            panic!("{name}: reference output '{key}' not produced");
        };
        println!("{name:6} {key:28} max|ref| {scale:10.4} max abs err {err:.2e}");
        assert!(err <= bound, "{name}: '{key}' differs by {err} (bound {bound})");
        checked += 1;
    }
    assert!(checked >= 12, "{name}: only {checked} outputs compared");
}

#[test]
fn gmvae_matches_reference() {
    run("gmvae");
}

#[test]
fn vae_matches_reference() {
    run("vae");
}

#[test]
fn ae_matches_reference() {
    run("ae");
}

#[test]
fn safetensors_export_loads_the_same_weights() {
    let dir = fixtures();
    let config = CellPlmConfig::from_json_file(dir.join("cellplm_small_ae.config.json")).unwrap();
    let device = sclm_nn::cpu_device();
    let (mut a, _) = CellPlm::load_torch(dir.join("cellplm_small_ae.best.ckpt"), &config, &device).unwrap();
    let (mut b, report) =
        CellPlm::load_torch(dir.join("cellplm_small_ae.state_dict.safetensors"), &config, &device).unwrap();
    assert_eq!(report.loaded.len(), 59);
    assert_eq!(a.to_state_dict().unwrap(), b.to_state_dict().unwrap());
    // A config that does not fit the checkpoint fails with the mismatched names.
    let mut wrong = config.clone();
    wrong.post_latent_dim = 8;
    let err = CellPlm::load_torch(dir.join("cellplm_small_ae.best.ckpt"), &wrong, &device).unwrap_err().to_string();
    assert!(err.contains("lat_2lat") && err.contains("shape"), "{err}");
}
