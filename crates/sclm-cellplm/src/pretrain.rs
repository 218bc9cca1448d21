//! Pretraining by cell-level masked language modelling (paper §3.3 and appendix D; masking and
//! objective as the published `MaskBuilder` and `NBImputationLoss`; the authors released no
//! pretraining script, so the loop is ours).
//!
//! One training sequence is one [`TrainGroup`]: cells of one sample (obs `batch` by default) of
//! one dataset, over the model vocabulary. Each step, for each group:
//! 1. drop `drop_node_rate` of the cells and keep at most `max_cells` (published `drop_nodes`);
//! 2. choose `mask_node_rate` of the kept cells; in each, hide every measured gene with a rate
//!    drawn from Beta(5, 4/r + 2 − 5) capped at 0.9 (`mask_beta`, r = `mask_feature_rate`) or with
//!    the fixed rate r;
//! 3. encode the masked input, sample the latent (GMVAE: hard Gumbel-softmax cluster and
//!    reparameterised z), decode with the batch/dataset covariates;
//! 4. loss = NB negative log-likelihood of the *unmasked* counts of every kept cell, over the
//!    genes the group's dataset measures (its panel; datasets with different panels train
//!    together), with the mean rescaled to the cell's library over the panel, plus the latent
//!    terms (`w_li·max(λ, gauss) + w_en·max(λ, cat)` for the GMVAE).
//!
//! Randomness: the trainer seeds the model's device generator per optimiser step; the masking
//! draws its host seed from that generator, so a run is a function of its seed and resumes
//! exactly.
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_distr::{Beta, Distribution as _};
use sclm_data::AnnData;
use sclm_nn::burn;
use sclm_nn::burn::prelude::*;
use sclm_nn::burn::tensor::{Distribution, TensorData};
use sclm_nn::embedding::CsrRows;
use sclm_nn::train::{
    DecayKind, FitSummary, LossOutput, OptimizerConfig, ParamGroupConfig, Progress, ScheduleConfig, TrainConfig,
    Trainable, Trainer,
};
use serde::{Deserialize, Serialize};

use crate::config::DecoderKind;
use crate::error::{CellPlmError, Result};
use crate::model::{nb_loss, to_vec, CellPlm, Covariates, GroupInput};

/// Masking of a training step (published names; defaults = the published 85M pretraining run).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct MaskConfig {
    /// Fraction of the kept cells whose genes are masked (default 0.75).
    pub mask_node_rate: f64,
    /// Mean fraction of measured genes hidden in a masked cell (default 0.25).
    pub mask_feature_rate: f64,
    /// Fraction of the cells of a group dropped before masking (default 0.3).
    pub drop_node_rate: f64,
    /// Most cells of a group kept in one step (default 4,000).
    pub max_cells: usize,
    /// Per-cell masking rate from Beta(5, 4/r + 2 − 5), capped at 0.9 (default true); otherwise
    /// the fixed rate `mask_feature_rate`.
    pub mask_beta: bool,
}

impl Default for MaskConfig {
    fn default() -> Self {
        MaskConfig {
            mask_node_rate: 0.75,
            mask_feature_rate: 0.25,
            drop_node_rate: 0.3,
            max_cells: 4000,
            mask_beta: true,
        }
    }
}

impl MaskConfig {
    /// Checks the rates.
    pub fn validate(&self) -> Result<()> {
        let unit = |v: f64, name: &str, hi_open: bool| {
            let ok = v.is_finite() && v >= 0.0 && if hi_open { v < 1.0 } else { v <= 1.0 };
            if ok {
                Ok(())
            } else {
                Err(CellPlmError::Config(format!("{name} = {v} must lie in [0, 1{}", if hi_open { ")" } else { "]" })))
            }
        };
        unit(self.mask_node_rate, "mask_node_rate", false)?;
        unit(self.mask_feature_rate, "mask_feature_rate", true)?;
        unit(self.drop_node_rate, "drop_node_rate", true)?;
        if self.max_cells == 0 {
            return Err(CellPlmError::Config("max_cells must be at least 1".into()));
        }
        Ok(())
    }
}

/// One training sequence: cells of one sample of one dataset, raw counts over the model
/// vocabulary, with the dataset's gene panel and covariates.
#[derive(Debug, Clone)]
pub struct TrainGroup {
    /// CSR row pointer (`cells + 1`).
    pub indptr: Vec<usize>,
    /// Vocabulary index of each stored count (sorted within a row).
    pub indices: Vec<u32>,
    /// Raw counts.
    pub data: Vec<f32>,
    /// Vocabulary size.
    pub n_genes: usize,
    /// Vocabulary genes measured by the group's dataset (sorted; the reconstruction targets).
    pub panel: Arc<Vec<u32>>,
    /// Spatial coordinates per cell (negative = missing), when the dataset has them.
    pub coords: Option<Vec<[f32; 2]>>,
    /// Batch covariate id per cell (`None`: the model has no batch table).
    pub batch: Option<Vec<Option<usize>>>,
    /// Dataset covariate id of the group (`None`: the model has no dataset table).
    pub dataset: Option<usize>,
    /// Row of each cell in its dataset.
    pub cells: Vec<usize>,
    /// Masking applied to this group in training.
    pub masking: MaskConfig,
}

impl TrainGroup {
    /// Number of cells.
    pub fn n_cells(&self) -> usize {
        self.indptr.len() - 1
    }
}

/// A group after dropping and masking: the kept cells' masked input and unmasked targets.
#[derive(Debug, Clone, PartialEq)]
pub struct MaskedGroup {
    /// Kept cells (positions in the group), in increasing order.
    pub kept: Vec<usize>,
    /// Whether each kept cell was chosen for masking.
    pub masked_cells: Vec<bool>,
    /// Masked input over the vocabulary (CSR over the kept cells).
    pub input: (Vec<usize>, Vec<u32>, Vec<f32>),
    /// Number of stored counts hidden.
    pub n_hidden: usize,
}

/// Drops and masks the cells of `g` as the published `MaskBuilder` does (see the module docs).
pub fn mask_group<R: Rng>(g: &TrainGroup, m: &MaskConfig, rng: &mut R) -> MaskedGroup {
    let n = g.n_cells();
    let mut kept: Vec<usize> = (0..n).collect();
    if m.drop_node_rate > 0.0 || n > m.max_cells {
        kept.shuffle(rng);
        let keep = (((n as f64) * (1.0 - m.drop_node_rate)) as usize).clamp(1, m.max_cells.max(1)).min(n);
        kept.truncate(keep);
        kept.sort_unstable();
    }
    let k = kept.len();
    let n_mask = ((m.mask_node_rate * k as f64) as usize).min(k);
    let mut order: Vec<usize> = (0..k).collect();
    order.shuffle(rng);
    let mut masked_cells = vec![false; k];
    for &i in &order[..n_mask] {
        masked_cells[i] = true;
    }
    let beta = (m.mask_beta && m.mask_feature_rate > 0.0)
        .then(|| Beta::new(5.0, 4.0 / m.mask_feature_rate + 2.0 - 5.0).ok())
        .flatten();
    let (mut ptr, mut idx, mut val) = (Vec::with_capacity(k + 1), Vec::new(), Vec::new());
    ptr.push(0);
    let mut n_hidden = 0;
    for (i, &r) in kept.iter().enumerate() {
        let rate = if !masked_cells[i] {
            0.0
        } else {
            match &beta {
                Some(b) => b.sample(rng).min(0.9),
                None => m.mask_feature_rate,
            }
        };
        for p in g.indptr[r]..g.indptr[r + 1] {
            if rate > 0.0 && rng.random::<f64>() < rate {
                n_hidden += 1;
                continue;
            }
            idx.push(g.indices[p]);
            val.push(g.data[p]);
        }
        ptr.push(idx.len());
    }
    MaskedGroup { kept, masked_cells, input: (ptr, idx, val), n_hidden }
}

impl CellPlm {
    /// The pretraining loss of one group under `masking`, with the host random draws from `rng`
    /// (see the module docs). Terms: `nb`, `latent` and the raw latent terms.
    ///
    /// # Shapes
    /// - `g`: `n × genes` → total `[1]`
    pub fn masked_loss<R: Rng>(&self, g: &TrainGroup, masking: &MaskConfig, rng: &mut R) -> Result<LossOutput> {
        let c = self.config();
        if !matches!(c.dec_mod, DecoderKind::Nbmlp) {
            return Err(CellPlmError::Config("pretraining needs the nbmlp decoder".into()));
        }
        if g.n_genes != c.n_genes() {
            return Err(CellPlmError::Input(format!(
                "training group has {} genes, the model vocabulary {}",
                g.n_genes,
                c.n_genes()
            )));
        }
        let mg = mask_group(g, masking, rng);
        let (ptr, idx, val) = &mg.input;
        let counts = CsrRows::new(g.n_genes, ptr, idx, val)?;
        let coords: Option<Vec<[f32; 2]>> = g.coords.as_ref().map(|cs| mg.kept.iter().map(|&r| cs[r]).collect());
        let batch: Option<Vec<Option<usize>>> = g.batch.as_ref().map(|b| mg.kept.iter().map(|&r| b[r]).collect());
        let dataset: Option<Vec<Option<usize>>> = g.dataset.map(|d| vec![Some(d); mg.kept.len()]);
        let input = GroupInput {
            counts,
            coords: coords.as_deref(),
            covariates: Covariates { batch: batch.as_deref(), dataset: dataset.as_deref() },
        };
        let out = self.forward_mode(&input, true, false)?;
        let dec = out.decoder.expect("decoder requested");
        let disp = dec.disp.expect("nb head");
        let device = self.device();
        // Targets: the unmasked counts of the kept cells over the panel.
        let panel = &g.panel;
        let p = panel.len();
        let full = p == g.n_genes;
        let mut pos = vec![u32::MAX; if full { 0 } else { g.n_genes }];
        for (j, &v) in panel.iter().enumerate() {
            if !full {
                pos[v as usize] = j as u32;
            }
        }
        let k = mg.kept.len();
        let mut truth = vec![0f32; k * p];
        for (i, &r) in mg.kept.iter().enumerate() {
            for q in g.indptr[r]..g.indptr[r + 1] {
                let v = g.indices[q] as usize;
                let j = if full { v } else { pos[v] as usize };
                if j != u32::MAX as usize {
                    truth[i * p + j] += g.data[q];
                }
            }
        }
        let truth = Tensor::<2>::from_data(TensorData::new(truth, [k, p]), &device);
        let (mean, disp) = if full {
            (dec.mean, disp)
        } else {
            let sel = Tensor::<1, Int>::from_data(
                TensorData::new(panel.iter().map(|&v| v as i64).collect::<Vec<_>>(), [p]),
                &device,
            );
            (dec.mean.select(1, sel.clone()), disp.select(1, sel))
        };
        let nb = nb_loss(truth, mean, disp);
        let total = nb.clone() + out.latent_loss.clone();
        let scalar = |t: &Tensor<1>| to_vec(t.clone())[0] as f64;
        let mut loss = LossOutput::new(total)
            .with_term("nb", scalar(&nb))
            .with_term("latent", scalar(&out.latent_loss))
            .with_term("masked_fraction", mg.n_hidden as f64 / g.indptr[g.n_cells()].max(1) as f64);
        for (name, t) in &out.latent_terms {
            loss = loss.with_term(name.clone(), scalar(t));
        }
        Ok(loss)
    }
}

/// Per-gene statistics of a corpus used to initialise the NB head (see
/// [`CellPlm::with_decoder_init`]): mean expression fraction and a moment estimate of the NB
/// dispersion, over the cells whose dataset measures the gene.
pub fn corpus_gene_stats(corpus: &Corpus) -> (Vec<f64>, Vec<f64>) {
    let g = corpus.genes.len();
    let (mut frac, mut seen) = (vec![0f64; g], vec![0f64; g]);
    for grp in &corpus.groups {
        for r in 0..grp.n_cells() {
            let lib: f64 = grp.data[grp.indptr[r]..grp.indptr[r + 1]].iter().map(|&v| v as f64).sum();
            if lib <= 0.0 {
                continue;
            }
            for &j in grp.panel.iter() {
                seen[j as usize] += 1.0;
            }
            for q in grp.indptr[r]..grp.indptr[r + 1] {
                frac[grp.indices[q] as usize] += grp.data[q] as f64 / lib;
            }
        }
    }
    for j in 0..g {
        frac[j] = if seen[j] > 0.0 { frac[j] / seen[j] } else { 0.0 };
    }
    // θ_j = Σ μ² / Σ ((x − μ)² − μ) with μ_ij = p_j · lib_i.
    let (mut num, mut den) = (vec![0f64; g], vec![0f64; g]);
    for grp in &corpus.groups {
        let mut row = vec![0f64; g];
        for r in 0..grp.n_cells() {
            let lib: f64 = grp.data[grp.indptr[r]..grp.indptr[r + 1]].iter().map(|&v| v as f64).sum();
            if lib <= 0.0 {
                continue;
            }
            for q in grp.indptr[r]..grp.indptr[r + 1] {
                row[grp.indices[q] as usize] = grp.data[q] as f64;
            }
            for &j in grp.panel.iter() {
                let j = j as usize;
                let mu = frac[j] * lib;
                num[j] += mu * mu;
                den[j] += (row[j] - mu).powi(2) - mu;
                row[j] = 0.0;
            }
        }
    }
    let theta = (0..g).map(|j| if den[j] > 0.0 { (num[j] / den[j]).clamp(0.01, 100.0) } else { 100.0 }).collect();
    (frac, theta)
}

impl CellPlm {
    /// Initialises the NB head from per-gene statistics: output bias `ln(p_j + 1e-6)` (so the
    /// first prediction is the mean profile) and dispersion `ln θ_j`. A fresh head starts from
    /// an arbitrary profile and Adam moves a log-scale bias by about `lr` per step, so without
    /// this the first thousands of steps only fit per-gene constants. No effect on the MLP head.
    pub fn with_decoder_init(mut self, frac: &[f64], theta: &[f64]) -> Result<Self> {
        let g = self.config().n_genes();
        if frac.len() != g || theta.len() != g {
            return Err(CellPlmError::Input(format!("gene statistics for {} genes, the model has {g}", frac.len())));
        }
        let device = self.device();
        if let crate::model::DecoderHead::Nb(head) = &mut self.decoder.head {
            let bias: Vec<f32> = frac.iter().map(|&p| (p + 1e-6).ln() as f32).collect();
            head.dec_mean.bias =
                Some(burn::module::Param::from_tensor(Tensor::from_data(TensorData::new(bias, [g]), &device)));
            let disp: Vec<f32> = theta.iter().map(|&t| t.ln() as f32).collect();
            head.dec_disp = burn::module::Param::from_tensor(Tensor::from_data(TensorData::new(disp, [g]), &device));
        }
        Ok(self)
    }
}

/// A host generator seeded from `device`'s generator (which the trainer seeds per step), so host
/// draws made inside a loss follow the run's seed.
pub fn device_rng(device: &Device) -> rand::rngs::StdRng {
    let u = to_vec(Tensor::<1>::random([4], Distribution::Uniform(0.0, 1.0), device));
    let seed = u.iter().fold(0u64, |acc, &x| (acc << 16) ^ ((x as f64 * 65536.0) as u64 & 0xffff));
    rand::rngs::StdRng::seed_from_u64(seed)
}

impl Trainable for CellPlm {
    type Batch = TrainGroup;

    fn loss(&self, batch: &TrainGroup) -> Result<LossOutput, sclm_nn::NnError> {
        let mut rng = device_rng(&self.device());
        self.masked_loss(batch, &batch.masking, &mut rng).map_err(sclm_nn::NnError::model)
    }

    /// The published state-dict names and layouts ([`CellPlm::name_table`]).
    fn weight_naming(&self) -> Option<Arc<dyn sclm_nn::train::WeightNaming>> {
        crate::weights::as_naming(self.name_table(""))
    }
}

/// How datasets become training groups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CorpusOptions {
    /// obs column whose values form the groups (samples, FOVs); default `batch`. When the column
    /// is absent a dataset forms one group.
    pub group_key: Option<String>,
    /// obsm key of 2-D spatial coordinates (default `spatial`; used when present).
    pub spatial_key: Option<String>,
    /// Layer with the raw counts (default: X).
    pub layer: Option<String>,
    /// Groups larger than this are split at random into near-equal pieces (default 128: many
    /// short sequences per epoch suit CPU training; the published run used up to 4,000).
    pub max_cells_per_group: usize,
    /// Seed of the split (default 0).
    pub seed: u64,
    /// Accept non-integer counts (default false).
    pub allow_non_integer: bool,
}

impl Default for CorpusOptions {
    fn default() -> Self {
        CorpusOptions {
            group_key: Some("batch".into()),
            spatial_key: Some("spatial".into()),
            layer: None,
            max_cells_per_group: 128,
            seed: 0,
            allow_non_integer: false,
        }
    }
}

/// Training data: groups over one vocabulary, with the covariate labels they use.
#[derive(Debug, Clone)]
pub struct Corpus {
    /// Model vocabulary.
    pub genes: Vec<String>,
    /// Training groups.
    pub groups: Vec<TrainGroup>,
    /// Batch covariate labels (`dataset/batch`), one per batch-table row.
    pub batch_labels: Vec<String>,
    /// Dataset names, one per dataset-table row.
    pub dataset_labels: Vec<String>,
    /// Cells in total.
    pub n_cells: usize,
    /// Per dataset: genes matched to the vocabulary, genes of the dataset.
    pub matched: Vec<(usize, usize)>,
    /// Per dataset: the gene-matching report (what was matched, how, and what was dropped).
    pub gene_reports: Vec<String>,
}

/// The union of the datasets' gene names (var index) in order of first appearance.
pub fn union_vocabulary(datasets: &[(String, &AnnData)]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (_, a) in datasets {
        for g in &a.var.index {
            if seen.insert(g.clone()) {
                out.push(g.clone());
            }
        }
    }
    out
}

impl Corpus {
    /// Builds the training groups of `datasets` (name, data with raw counts) over `genes`
    /// (genes are matched by the var index; duplicated names use the first column). Batch ids
    /// are assigned when `with_batch`, dataset ids when `with_dataset`.
    pub fn build(
        datasets: &[(String, &AnnData)],
        genes: &[String],
        opts: &CorpusOptions,
        masking: &MaskConfig,
        with_batch: bool,
        with_dataset: bool,
    ) -> Result<Corpus> {
        masking.validate()?;
        if datasets.is_empty() {
            return Err(CellPlmError::Input("no training data given".into()));
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(opts.seed ^ 0xc0ff_ee00);
        let mut groups = Vec::new();
        let mut batch_labels = Vec::new();
        let mut matched = Vec::new();
        let mut gene_reports = Vec::new();
        let mut n_cells = 0;
        for (d, (name, a)) in datasets.iter().enumerate() {
            let in_file = |e: sclm_model::ModelError| match e {
                sclm_model::ModelError::Input(m) => CellPlmError::Input(format!("{name}: {m}")),
                sclm_model::ModelError::Preprocess(p) => CellPlmError::Input(format!("{name}: {p}")),
                other => other.into(),
            };
            let x = sclm_model::cells::counts_matrix(a, opts.layer.as_deref()).map_err(in_file)?;
            // The one gene-matching path (symbols and Ensembl ids, offline); a vocabulary gene
            // takes one dataset column, duplicated names keep their first column.
            let (mapping, report) = sclm_model::GeneMapping::for_dataset(genes, &a.var, None).map_err(in_file)?;
            let mut col_to_vocab: Vec<Option<u32>> = vec![None; a.n_vars()];
            for (v, c) in mapping.vocab_to_col().iter().enumerate() {
                if let Some(c) = *c {
                    col_to_vocab[c] = Some(v as u32);
                }
            }
            let panel = mapping.panel();
            gene_reports.push(format!("{name}: {}", report.report()));
            matched.push((panel.len(), a.n_vars()));
            let panel = Arc::new(panel);
            for r in 0..x.nrows {
                let (cols, vals) = x.row(r);
                for (&c, &v) in cols.iter().zip(vals) {
                    if !v.is_finite() || v < 0.0 || (!opts.allow_non_integer && v.fract() != 0.0) {
                        return Err(CellPlmError::Input(format!(
                            "{name}: cell {r} ('{}'), gene '{}' holds {v}: pretraining needs raw integer counts",
                            a.obs.index.get(r).map(String::as_str).unwrap_or(""),
                            a.var.index.get(c as usize).map(String::as_str).unwrap_or("")
                        )));
                    }
                }
            }
            let coords = match &opts.spatial_key {
                Some(k) if a.obsm.contains_key(k) => {
                    let s = a.obsm[k].to_f32();
                    if s.ncols < 2 {
                        return Err(CellPlmError::Input(format!(
                            "{name}: obsm['{k}'] has {} columns, expected 2",
                            s.ncols
                        )));
                    }
                    Some((0..s.nrows).map(|r| [s.get(r, 0), s.get(r, 1)]).collect::<Vec<_>>())
                }
                _ => None,
            };
            let labels: Vec<String> = match &opts.group_key {
                Some(k) => match a.obs.get(k) {
                    Some(col) => col.to_labels(),
                    None => vec![String::new(); a.n_obs()],
                },
                None => vec![String::new(); a.n_obs()],
            };
            let mut by_group: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
            for (r, l) in labels.iter().enumerate() {
                by_group.entry(l.as_str()).or_default().push(r);
            }
            for (label, mut rows) in by_group {
                let batch_id = batch_labels.len();
                batch_labels.push(format!("{name}/{label}"));
                let pieces = rows.len().div_ceil(opts.max_cells_per_group.max(1));
                if pieces > 1 {
                    rows.shuffle(&mut rng);
                }
                let base = rows.len() / pieces;
                let extra = rows.len() % pieces;
                let mut start = 0;
                for p in 0..pieces {
                    let len = base + usize::from(p < extra);
                    let mut part = rows[start..start + len].to_vec();
                    start += len;
                    part.sort_unstable();
                    let (mut ptr, mut idx, mut val) = (vec![0usize], Vec::new(), Vec::new());
                    for &r in &part {
                        let (cols, vals) = x.row(r);
                        let mut row: Vec<(u32, f32)> = cols
                            .iter()
                            .zip(vals)
                            .filter_map(|(&c, &v)| col_to_vocab[c as usize].map(|g| (g, v)))
                            .filter(|&(_, v)| v != 0.0)
                            .collect();
                        row.sort_unstable_by_key(|e| e.0);
                        for (g, v) in row {
                            idx.push(g);
                            val.push(v);
                        }
                        ptr.push(idx.len());
                    }
                    n_cells += part.len();
                    groups.push(TrainGroup {
                        indptr: ptr,
                        indices: idx,
                        data: val,
                        n_genes: genes.len(),
                        panel: panel.clone(),
                        coords: coords.as_ref().map(|c| part.iter().map(|&r| c[r]).collect()),
                        batch: with_batch.then(|| vec![Some(batch_id); part.len()]),
                        dataset: with_dataset.then_some(d),
                        cells: part,
                        masking: *masking,
                    });
                }
            }
        }
        Ok(Corpus {
            genes: genes.to_vec(),
            groups,
            batch_labels,
            dataset_labels: datasets.iter().map(|(n, _)| n.clone()).collect(),
            n_cells,
            matched,
            gene_reports,
        })
    }
}

/// Optimisation settings of [`pretrain`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PretrainConfig {
    /// Masking (default: the published 85M run's).
    pub masking: MaskConfig,
    /// Passes over the groups (default 20).
    pub epochs: usize,
    /// Peak learning rate (default 3e-4; published 85M run: 2e-4). At 1e-3 the small model's
    /// encoder collapsed towards one vector for all cells.
    pub lr: f64,
    /// AdamW weight decay (default 1e-8, published).
    pub weight_decay: f64,
    /// Linear warm-up steps (default 20), then cosine decay to 10 % at the end.
    pub warmup_steps: usize,
    /// Gradient clipping to this global norm (default 2.0).
    pub clip_grad_norm: Option<f64>,
    /// Learning rate of the gene embedding table relative to `lr` (default 0.1). Adam moves every
    /// row of a freshly initialised table (std 0.02) by about `lr` per step in a direction shared
    /// by all genes; at full rate the rows align within a few hundred steps and the embedder
    /// output collapses to the cell's depth. The published fine-tuning recipe also trains the
    /// embedder at a tenth of the rate.
    pub embedding_lr_scale: f64,
    /// Seed of everything (default 0).
    pub seed: u64,
}

impl Default for PretrainConfig {
    fn default() -> Self {
        PretrainConfig {
            masking: MaskConfig::default(),
            epochs: 20,
            lr: 3e-4,
            weight_decay: 1e-8,
            warmup_steps: 20,
            clip_grad_norm: Some(2.0),
            embedding_lr_scale: 0.1,
            seed: 0,
        }
    }
}

impl PretrainConfig {
    /// The trainer configuration for `steps_per_epoch` groups per epoch.
    pub fn train_config(&self, steps_per_epoch: usize) -> TrainConfig {
        let total = self.epochs * steps_per_epoch.max(1);
        TrainConfig::new(
            OptimizerConfig::new()
                .with_weight_decay(self.weight_decay)
                .with_clip_grad_norm(self.clip_grad_norm)
                .with_groups(vec![ParamGroupConfig::new("gene_embedding".into(), vec!["embedder.feat_enc".into()])
                    .with_lr_scale(self.embedding_lr_scale)]),
            ScheduleConfig::new(self.lr)
                .with_warmup_steps(self.warmup_steps.min(total / 2))
                .with_total_steps(Some(total))
                .with_decay(DecayKind::Cosine)
                .with_min_lr_ratio(0.1),
        )
        .with_seed(self.seed)
        .with_max_epochs(self.epochs)
    }
}

/// Pretrains `model` (initialised on an autodiff device such as [`sclm_nn::train_device`]) on
/// the groups of `corpus`. With `run_dir`, writes `log.jsonl` and a checkpoint after every epoch
/// there; `resume` continues from that checkpoint. Returns the trained model on the inference
/// device and the fit summary.
pub fn pretrain(
    model: CellPlm,
    corpus: &Corpus,
    cfg: &PretrainConfig,
    run_dir: Option<&Path>,
    resume: bool,
    progress: &mut dyn Progress,
) -> Result<(CellPlm, FitSummary)> {
    cfg.masking.validate()?;
    if corpus.genes != model.genes() {
        return Err(CellPlmError::Input("the corpus vocabulary differs from the model's".into()));
    }
    if corpus.groups.is_empty() {
        return Err(CellPlmError::Input("the training data has no cells".into()));
    }
    let c = model.config().clone();
    for g in &corpus.groups {
        if let Some(b) = &g.batch {
            if let Some(bad) = b.iter().flatten().find(|&&i| i >= c.batch_num) {
                return Err(CellPlmError::Input(format!(
                    "batch id {bad} but the model's batch table has {} rows",
                    c.batch_num
                )));
            }
        }
        if let Some(d) = g.dataset {
            if d >= c.dataset_num {
                return Err(CellPlmError::Input(format!(
                    "dataset id {d} but the model's dataset table has {} rows",
                    c.dataset_num
                )));
            }
        }
    }
    let tc = cfg.train_config(corpus.groups.len());
    let model_json: serde_json::Value =
        serde_json::from_str(&c.to_json()).map_err(|e| CellPlmError::Config(e.to_string()))?;
    let mut trainer = Trainer::start(model, tc, run_dir, resume, model_json)?;
    let summary = trainer.fit(&corpus.groups, &[], progress)?;
    Ok((trainer.model.valid(), summary))
}

/// Per-cell labels of the groups of `corpus` restricted to the dataset rows in `rows` (sorted):
/// the labels a training, validation or test batch may use.
pub fn labels_for(corpus: &Corpus, labels: &[Option<usize>], rows: &[usize]) -> Vec<Vec<Option<usize>>> {
    corpus
        .groups
        .iter()
        .map(|g| {
            g.cells
                .iter()
                .map(|&r| if rows.binary_search(&r).is_ok() { labels.get(r).copied().flatten() } else { None })
                .collect()
        })
        .collect()
}

/// Expected expression fractions (the NB decoder's mean, normalised to sum 1 over the group's
/// gene panel, or over the whole vocabulary with `whole_vocabulary` — imputing genes a dataset
/// does not measure) of every cell of `corpus`, as a `cells × vocabulary` matrix in the order of
/// `corpus` rows of dataset `dataset` (rows of other datasets are skipped). Deterministic
/// inference; covariates as in the groups. Multiply a row by a library size for counts.
pub fn expected_fractions(
    model: &CellPlm,
    corpus: &Corpus,
    dataset: usize,
    n_rows: usize,
    whole_vocabulary: bool,
) -> Result<sclm_data::Dense<f32>> {
    let g = model.genes().len();
    let mut out = sclm_data::Dense::zeros(n_rows, g);
    let mut seen = 0usize;
    for grp in &corpus.groups {
        let this = match grp.dataset {
            Some(d) => d == dataset,
            None => corpus.dataset_labels.len() == 1,
        };
        if !this {
            continue;
        }
        let counts = CsrRows::new(grp.n_genes, &grp.indptr, &grp.indices, &grp.data)?;
        let dataset_ids: Option<Vec<Option<usize>>> = grp.dataset.map(|d| vec![Some(d); grp.n_cells()]);
        let input = GroupInput {
            counts,
            coords: grp.coords.as_deref(),
            covariates: Covariates { batch: grp.batch.as_deref(), dataset: dataset_ids.as_deref() },
        };
        let dec = model.forward_mode(&input, true, true)?.decoder.expect("decoder requested");
        let mean = to_vec(dec.mean);
        let mut in_panel = vec![whole_vocabulary; g];
        for &j in grp.panel.iter() {
            in_panel[j as usize] = true;
        }
        for (i, &r) in grp.cells.iter().enumerate() {
            if r >= n_rows {
                return Err(CellPlmError::Input(format!("cell row {r} outside {n_rows} rows")));
            }
            let row = &mean[i * g..(i + 1) * g];
            let total: f64 = row.iter().zip(&in_panel).filter(|(_, &p)| p).map(|(&v, _)| v as f64).sum();
            let dst = out.row_mut(r);
            for j in 0..g {
                dst[j] = if in_panel[j] && total > 0.0 { (row[j] as f64 / total) as f32 } else { 0.0 };
            }
            seen += 1;
        }
    }
    if seen == 0 {
        return Err(CellPlmError::Input(format!("no cells of dataset {dataset} in the corpus")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group(n: usize, g: usize) -> TrainGroup {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (mut ptr, mut idx, mut val) = (vec![0], vec![], vec![]);
        for _ in 0..n {
            for j in 0..g {
                if rng.random::<f64>() < 0.5 {
                    idx.push(j as u32);
                    val.push(rng.random_range(1..5) as f32);
                }
            }
            ptr.push(idx.len());
        }
        TrainGroup {
            indptr: ptr,
            indices: idx,
            data: val,
            n_genes: g,
            panel: Arc::new((0..g as u32).collect()),
            coords: None,
            batch: None,
            dataset: None,
            cells: (0..n).collect(),
            masking: MaskConfig::default(),
        }
    }

    #[test]
    fn masking_follows_the_rates() {
        let g = group(400, 200);
        let m = MaskConfig {
            drop_node_rate: 0.3,
            mask_node_rate: 0.75,
            mask_feature_rate: 0.25,
            max_cells: 250,
            mask_beta: true,
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mg = mask_group(&g, &m, &mut rng);
        // 400 · 0.7 = 280, capped at 250.
        assert_eq!(mg.kept.len(), 250);
        assert!(mg.kept.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(mg.masked_cells.iter().filter(|&&b| b).count(), 187);
        // Unmasked cells keep every count; masked cells lose about 5/18 of theirs (Beta mean).
        let (ptr, _, _) = &mg.input;
        let (mut kept_m, mut total_m) = (0usize, 0usize);
        for (i, &r) in mg.kept.iter().enumerate() {
            let before = g.indptr[r + 1] - g.indptr[r];
            let after = ptr[i + 1] - ptr[i];
            if mg.masked_cells[i] {
                kept_m += after;
                total_m += before;
            } else {
                assert_eq!(before, after);
            }
        }
        let hidden = 1.0 - kept_m as f64 / total_m as f64;
        assert!((hidden - 5.0 / 18.0).abs() < 0.03, "hidden fraction {hidden}");
        assert_eq!(mg.n_hidden, total_m - kept_m);
        // Fixed rate without Beta.
        let m2 = MaskConfig { mask_beta: false, mask_feature_rate: 0.5, drop_node_rate: 0.0, mask_node_rate: 1.0, ..m };
        let mg2 = mask_group(&g, &MaskConfig { max_cells: 400, ..m2 }, &mut rng);
        assert_eq!(mg2.kept.len(), 400);
        let frac = mg2.n_hidden as f64 / g.data.len() as f64;
        assert!((frac - 0.5).abs() < 0.02, "{frac}");
    }

    #[test]
    fn bad_rates_are_rejected() {
        let m = MaskConfig { mask_feature_rate: 1.0, ..MaskConfig::default() };
        assert!(m.validate().unwrap_err().to_string().contains("mask_feature_rate"));
        assert!(MaskConfig { max_cells: 0, ..MaskConfig::default() }.validate().is_err());
    }
}
