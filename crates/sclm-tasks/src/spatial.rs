//! Spatial imputation (CellPLM §4.4): genes of a spatial dataset are held out, the model is
//! trained on the spatial data without them together with a reference that measures them
//! (`reference`, or by default half of the spots), and imputes them; per-gene Pearson
//! correlation and cosine over the query spots, next to kNN regression from the reference.
//!
//! Honest protocol: the held-out genes are drawn stratified by sparsity
//! ([`sclm_eval::protocols::sparsity_holdout`]: < 75 %, 75–90 %, 90–95 %, ≥ 95 % zeros) among
//! the genes both datasets measure; the most variable genes are then chosen without the
//! held-out genes' values; model and baseline are scored on the same genes, and genes constant
//! in the truth or in either prediction (where a correlation is undefined) are skipped for both,
//! with the count reported.
use rand::seq::SliceRandom;
use rand::SeedableRng;
use sclm_data::{AnnData, Column, Dense, Matrix};
use sclm_eval::baselines;
use sclm_eval::metrics::{cosine, pearson};
use sclm_eval::MetricsReport;
use sclm_model::{CellModel, ReconstructOptions, ReconstructionFit};
use sclm_nn::burn::tensor::Device;
use sclm_nn::train::Progress;

use crate::choice::{columns_in_vocabulary, ModelChoice};
use crate::denoising::{median_library, vocabulary_columns};
use crate::error::{input, Result};

/// Options of [`spatial_imputation`].
#[derive(Debug, Clone)]
pub struct SpatialOptions {
    /// obsm key of the spot coordinates (default `spatial`).
    pub spatial_key: String,
    /// Most variable genes the model reads besides the held-out ones (default 1,000).
    pub n_top_genes: usize,
    /// Fraction of the shared genes held out (default 0.1), split evenly over the four
    /// sparsity groups.
    pub holdout_frac: f64,
    /// Training epochs (default 10).
    pub epochs: usize,
    /// Learning rate (`None`: the family's default).
    pub lr: Option<f64>,
    /// How cells are read (group key, layer).
    pub cells: ReconstructOptions,
    /// Seed.
    pub seed: u64,
}

impl Default for SpatialOptions {
    fn default() -> Self {
        SpatialOptions {
            spatial_key: "spatial".into(),
            n_top_genes: 1000,
            holdout_frac: 0.1,
            epochs: 10,
            lr: None,
            cells: ReconstructOptions { allow_non_integer: true, ..Default::default() },
            seed: 0,
        }
    }
}

/// What [`spatial_imputation`] returns.
pub struct SpatialOutcome {
    /// Scores: kNN regression, then the model.
    pub reports: Vec<MetricsReport>,
    /// The query spots over the genes used: X as measured, layers `<family>_imputed` and
    /// `knn_imputed` (log-normalised), var `held_out`.
    pub data: AnnData,
    /// Query spots, reference cells, genes used, held-out genes, held-out genes scored.
    pub sizes: [usize; 5],
    /// Remarks.
    pub notes: Vec<String>,
}

/// Runs the protocol (see the module docs).
pub fn spatial_imputation(
    choice: ModelChoice<'_>,
    spatial: &AnnData,
    reference: Option<&AnnData>,
    opts: &SpatialOptions,
    device: &Device,
    stage: &mut dyn FnMut(&str),
    progress: &mut dyn Progress,
) -> Result<SpatialOutcome> {
    let key = &opts.spatial_key;
    let coords = sclm_model::cells::coordinates(&spatial.obsm, key)?;
    if spatial.n_vars() < 2 {
        return input(format!(
            "spatial imputation needs at least 2 genes (one to hold out, one to keep), the data has {}",
            spatial.n_vars()
        ));
    }
    if spatial.n_obs() < 4 {
        return input(format!("spatial imputation needs at least 4 spots, the data has {}", spatial.n_obs()));
    }
    if !(opts.holdout_frac > 0.0 && opts.holdout_frac < 1.0) {
        return input(format!("holdout fraction {} must lie in (0, 1)", opts.holdout_frac));
    }
    let counts = |a: &AnnData| -> Result<AnnData> {
        let x = sclm_model::cells::counts_matrix(a, opts.cells.layer.as_deref())?.into_owned();
        sclm_model::cells::check_counts(&x, true)?;
        let mut b = AnnData::new(Matrix::Csr(x));
        b.obs = a.obs.clone();
        b.var = a.var.clone();
        b.obsm = a.obsm.clone();
        Ok(b)
    };
    let mut sp = counts(spatial)?;
    let mut d = Dense::zeros(coords.len(), 2);
    for (r, c) in coords.iter().enumerate() {
        d.data[2 * r] = c[0];
        d.data[2 * r + 1] = c[1];
    }
    sp.obsm.insert("spatial".into(), sclm_data::Array2::F32(d));
    let mut notes = Vec::new();
    // The reference, with the spatial data's gene order (genes it lacks are not candidates).
    let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed ^ 0x51a7);
    let (reference, query) = match reference {
        Some(r) => {
            if r.n_obs() == 0 {
                return input("the reference has 0 cells");
            }
            (counts(r)?, sp)
        }
        None => {
            let mut spots: Vec<usize> = (0..sp.n_obs()).collect();
            spots.shuffle(&mut rng);
            let half = sp.n_obs() / 2;
            let (mut r, mut q) = (spots[..half].to_vec(), spots[half..].to_vec());
            r.sort_unstable();
            q.sort_unstable();
            notes.push(format!("reference: {} of the {} spots (no reference given)", r.len(), sp.n_obs()));
            (sp.select_obs(&r), sp.select_obs(&q))
        }
    };
    let (rmap, _) = sclm_model::GeneMapping::for_dataset(&query.var.index, &reference.var, None)
        .map_err(|e| crate::TaskError::Input(format!("the reference shares no gene with the spatial data: {e}")))?;
    let in_model = columns_in_vocabulary(&choice, &query.var)?;
    let candidates: Vec<usize> = (0..query.n_vars())
        .filter(|&j| rmap.vocab_to_col()[j].is_some() && in_model.binary_search(&j).is_ok())
        .collect();
    if candidates.len() < 2 {
        return input(format!(
            "spatial imputation needs at least 2 genes measured by both datasets{}, found {}",
            if choice.is_fresh() { "" } else { " and known to the model" },
            candidates.len()
        ));
    }
    // Held-out genes, stratified by sparsity in the spatial data.
    let cand_x = query.x.select_cols(&candidates);
    let per_group = ((candidates.len() as f64 * opts.holdout_frac / 4.0).round() as usize).max(1);
    let hold = sclm_eval::protocols::sparsity_holdout(&cand_x, per_group, opts.seed)?;
    let mut held: Vec<usize> = hold.held_out.iter().map(|&i| candidates[i]).collect();
    if held.len() >= candidates.len() {
        held.truncate(candidates.len() - 1);
    }
    let kept: Vec<usize> = candidates.iter().copied().filter(|j| held.binary_search(j).is_err()).collect();
    // The most variable of the kept genes, chosen without the held-out genes' values.
    let kept_ln = baselines::log_normalize(&query.x.select_cols(&kept))?;
    let (_, hv) = baselines::pca_embedding(&kept_ln, 2.min(kept.len()), Some(opts.n_top_genes), opts.seed)?;
    let hvg: Vec<usize> = hv.iter().map(|&i| kept[i]).collect();
    let mut genes: Vec<usize> = hvg.iter().chain(&held).copied().collect();
    genes.sort_unstable();
    let held_pos: Vec<usize> = (0..genes.len()).filter(|&i| held.binary_search(&genes[i]).is_ok()).collect();
    let query = query.select_vars(&genes);
    let ref_cols: Vec<usize> = genes.iter().map(|&j| rmap.vocab_to_col()[j].unwrap_or(0)).collect();
    let mut reference = reference.select_vars(&ref_cols);
    reference.var.index = query.var.index.clone();
    let keep_pos: Vec<usize> = (0..genes.len()).filter(|i| held_pos.binary_search(i).is_err()).collect();
    let query_in = query.select_vars(&keep_pos);
    let truth = baselines::log_normalize(&query.x)?.to_dense();

    // Baseline: kNN regression from the reference on PCA of the shared genes.
    let ref_ln = baselines::log_normalize(&reference.x)?;
    let ref_shared = ref_ln.to_dense().select_cols(&keep_pos);
    let qin_dense = baselines::log_normalize(&query_in.x)?.to_dense();
    let mut joint = Dense::zeros(ref_shared.nrows + qin_dense.nrows, ref_shared.ncols);
    joint.data[..ref_shared.data.len()].copy_from_slice(&ref_shared.data);
    joint.data[ref_shared.data.len()..].copy_from_slice(&qin_dense.data);
    let n_comps = 30.min(joint.nrows - 1).min(joint.ncols).max(1);
    let (pcs, _) = baselines::pca_embedding(&Matrix::Dense(joint), n_comps, None, opts.seed)?;
    let nr = reference.n_obs();
    let ref_pcs = pcs.select_rows(&(0..nr).collect::<Vec<_>>());
    let q_pcs = pcs.select_rows(&(nr..pcs.nrows).collect::<Vec<_>>());
    let k = 15.min(nr);
    let graph = sclm_eval::neighbors::knn_query(&ref_pcs, &q_pcs, k)?;
    let ref_dense = ref_ln.to_dense();
    let ng = query.n_vars();
    let mut knn_pred = Dense::zeros(query.n_obs(), ng);
    for i in 0..query.n_obs() {
        for &r in &graph.indices[i * k..(i + 1) * k] {
            for &j in &held_pos {
                knn_pred.data[i * ng + j] += ref_dense.get(r as usize, j) / k as f32;
            }
        }
    }

    // The model: reference (every gene) and spatial query (held-out genes absent) together.
    let family = choice.family().to_string();
    let named = vec![("reference".to_string(), &reference), ("spatial".to_string(), &query_in)];
    let mut slot = None;
    let model = choice.resolve(&query.var.index, device, &mut slot)?;
    let ro = ReconstructOptions { with_batch: true, with_dataset: true, whole_vocabulary: true, ..opts.cells.clone() };
    let fit = ReconstructionFit {
        epochs: opts.epochs,
        lr: opts.lr,
        seed: opts.seed,
        cells: ro.clone(),
        ..Default::default()
    };
    stage(&format!("training {family} on reference + spatial data ({} epochs)", opts.epochs.max(1)));
    let trained: Box<dyn CellModel> = model.fit_reconstruction(&named, &fit, device, progress)?;
    let cols = vocabulary_columns(trained.as_ref(), &query)?;
    let fr = trained.reconstruct(&named, 1, &ro)?.select_cols(&cols);
    let target = median_library(&query.x.to_csr());
    let mut pred = fr;
    pred.data.iter_mut().for_each(|v| *v = (*v as f64 * target).ln_1p() as f32);

    // Same genes for both: skip those where a correlation is undefined for either.
    let column = |m: &Dense<f32>, j: usize| -> Vec<f32> { (0..m.nrows).map(|i| m.get(i, j)).collect() };
    let constant = |v: &[f32]| v.iter().all(|&x| x == v[0]);
    let scored: Vec<usize> = held_pos
        .iter()
        .copied()
        .filter(|&j| !constant(&column(&truth, j)) && !constant(&column(&knn_pred, j)) && !constant(&column(&pred, j)))
        .collect();
    if scored.len() < held_pos.len() {
        notes.push(format!(
            "{} of {} held-out genes skipped for every method: constant over the query spots in the truth or in a prediction (correlation undefined)",
            held_pos.len() - scored.len(),
            held_pos.len()
        ));
    }
    if scored.is_empty() {
        return input(
            "no held-out gene varies over the query spots in the truth and both predictions; nothing to score",
        );
    }
    let scores = |p: &Dense<f32>| -> Result<(f64, f64)> {
        let (mut c, mut s) = (0.0, 0.0);
        for &j in &scored {
            let (t, q) = (column(&truth, j), column(p, j));
            c += pearson(&t, &q)?;
            s += cosine(&t, &q)?;
        }
        Ok((c / scored.len() as f64, s / scored.len() as f64))
    };
    let mut reports = Vec::new();
    for (name, p) in [("kNN regression from reference".to_string(), &knn_pred), (family.clone(), &pred)] {
        let (c, s) = scores(p)?;
        let mut r = MetricsReport::new("spatial imputation", name, query.n_obs());
        r.push("mean_gene_corr", c);
        r.push("mean_gene_cosine", s);
        r.note("held_out_genes", held_pos.len());
        r.note("genes_scored", scored.len());
        reports.push(r);
    }
    let mut out = query.clone();
    out.layers.insert(format!("{family}_imputed"), Matrix::Dense(pred));
    out.layers.insert("knn_imputed".into(), Matrix::Dense(knn_pred));
    let flag: Vec<bool> = (0..out.n_vars()).map(|j| held_pos.binary_search(&j).is_ok()).collect();
    out.var.insert("held_out", Column::Bool(flag))?;
    let sizes = [query.n_obs(), reference.n_obs(), genes.len(), held_pos.len(), scored.len()];
    Ok(SpatialOutcome { reports, data: out, sizes, notes })
}
