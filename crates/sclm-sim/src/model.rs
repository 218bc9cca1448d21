//! Gene-level parameters and ground truth, drawn once per simulation.

use std::collections::BTreeMap;

use rand::Rng;
use rand_distr::{ChiSquared, Distribution, Gamma, StandardNormal};
use sclm_data::{Dense, Value};

use crate::rng::Xoshiro;
use crate::{SimConfig, SimError};

pub(crate) const STREAM_GENES: u64 = 1;
pub(crate) const STREAM_CELLS: u64 = 2;
pub(crate) const STREAM_COUNTS: u64 = 3;
pub(crate) const STREAM_SPATIAL: u64 = 4;
pub(crate) const STREAM_PERTURB: u64 = 5;
pub(crate) const STREAM_DROPOUT: u64 = 6;

/// The 13 protein-coding genes of the human mitochondrial genome.
const MITO_SYMBOLS: [&str; 13] = [
    "MT-ND1", "MT-ND2", "MT-CO1", "MT-CO2", "MT-ATP8", "MT-ATP6", "MT-CO3", "MT-ND3", "MT-ND4L", "MT-ND4", "MT-ND5",
    "MT-ND6", "MT-CYB",
];

/// Gene names of a simulation: `Gene0001`, `Gene0002`, ... (zero-padded to at least four
/// digits) for the first `n_genes - n_mito` genes, then the mitochondrial genes `MT-ND1`,
/// ..., `MT-CYB` (and `MT-G14`, ... beyond 13).
pub fn gene_names(n_genes: usize, n_mito: usize) -> Vec<String> {
    let n_real = n_genes.saturating_sub(n_mito);
    let width = n_real.to_string().len().max(4);
    let mut names: Vec<String> = (1..=n_real).map(|i| format!("Gene{i:0width$}")).collect();
    for m in 0..n_genes - n_real {
        names.push(match MITO_SYMBOLS.get(m) {
            Some(s) => s.to_string(),
            None => format!("MT-G{}", m + 1),
        });
    }
    names
}

/// Names of the lineages: `A`, `B`, ...
fn lineage_names(n: usize) -> Vec<String> {
    (0..n).map(|l| ((b'A' + l as u8) as char).to_string()).collect()
}

/// Ground truth of the spatial layout.
#[derive(Debug, Clone, PartialEq)]
pub struct SpatialTruth {
    /// Niche centres (`n_types * niches_per_type` × 2), those of type 0 first.
    pub centres: Dense<f64>,
    /// The cell type (index into [`GroundTruth::type_names`]) of each niche centre.
    pub centre_type: Vec<usize>,
}

/// Ground truth of the perturbations.
#[derive(Debug, Clone, PartialEq)]
pub struct PerturbTruth {
    /// The knocked-down gene of each perturbation (also its label in `obs['perturbation']`).
    pub genes: Vec<String>,
    /// Index of each knocked-down gene among the genes.
    pub gene_index: Vec<usize>,
    /// Expected log-fold change (natural log) of each perturbation (rows) on every gene
    /// (columns), relative to control cells of the same type, batch and library size. The
    /// knocked-down gene has `ln(knockdown)`, its targets their effects, other genes 0.
    /// Dropout, when enabled, is applied after these effects and is not part of them.
    pub lfc: Dense<f64>,
}

/// Everything the simulator drew at the gene level: the true parameters behind the counts.
#[derive(Debug, Clone, PartialEq)]
pub struct GroundTruth {
    /// Gene names.
    pub gene_names: Vec<String>,
    /// Base mean of each gene (gamma, with outliers and mitochondrial genes rescaled), before
    /// any DE or batch factor. Only relative values matter: cells scale them to their library size.
    pub base_mean: Vec<f64>,
    /// Whether each gene is a high-expression outlier.
    pub is_outlier: Vec<bool>,
    /// Whether each gene is mitochondrial.
    pub is_mito: Vec<bool>,
    /// Per-gene BCV factor `sqrt(df / chi²(df))`.
    pub bcv_factor: Vec<f64>,
    /// Lineage names (`A`, `B`, ...).
    pub lineage_names: Vec<String>,
    /// Cell type names (`A1`, `A2`, `B1`, ...: lineage letter then rank in the lineage).
    pub type_names: Vec<String>,
    /// Lineage of each type.
    pub type_lineage: Vec<usize>,
    /// Probability of each type (sums to 1).
    pub type_probs: Vec<f64>,
    /// Shift of the log library size of each type.
    pub type_lib_shift: Vec<f64>,
    /// Log DE factors of each lineage (lineages × genes; 0 where not DE).
    pub lineage_log_factors: Dense<f64>,
    /// Type-specific log DE factors, on top of the lineage (types × genes; 0 where not DE).
    pub type_log_factors: Dense<f64>,
    /// Total log DE factor of each type: lineage + type-specific (types × genes).
    pub de_log_factors: Dense<f64>,
    /// Batch names (`Batch1`, ...).
    pub batch_names: Vec<String>,
    /// First cell of each batch, plus `n_cells` at the end (cells are ordered by batch).
    pub batch_bounds: Vec<usize>,
    /// Log batch factor of each batch on every gene (batches × genes).
    pub batch_log_factors: Dense<f64>,
    /// Expected share of a cell's library going to each gene, for every (type, batch) pair:
    /// row `t * n_batches + b`, each row summing to 1. A control cell with library size `L`
    /// has expected count `L * share` before BCV noise and dropout.
    pub proportions: Dense<f64>,
    /// Spatial niches, when simulated.
    pub spatial: Option<SpatialTruth>,
    /// Perturbations, when simulated.
    pub perturbation: Option<PerturbTruth>,
}

fn normal(rng: &mut Xoshiro) -> f64 {
    StandardNormal.sample(rng)
}

/// A signed log factor: `±N(loc, scale)` with the minus sign taken with probability `down`.
fn log_factor(rng: &mut Xoshiro, loc: f64, scale: f64, down: f64) -> f64 {
    let v = loc + scale * normal(rng);
    if rng.uniform() < down {
        -v
    } else {
        v
    }
}

fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

impl GroundTruth {
    /// Draws all gene-level parameters of `cfg` (which must be valid).
    pub(crate) fn draw(cfg: &SimConfig) -> Result<Self, SimError> {
        let g = cfg.n_genes;
        let n_real = g - cfg.n_mito;
        let gene_names = gene_names(g, cfg.n_mito);
        let mut rng = Xoshiro::new(cfg.seed, STREAM_GENES, 0);
        let err = |what: &str, e: &dyn std::fmt::Display| SimError::Config(format!("{what}: {e}"));

        // Base means: gamma, then high-expression outliers relative to the median.
        let gamma = Gamma::new(cfg.mean_shape, 1.0 / cfg.mean_rate).map_err(|e| err("mean_shape/mean_rate", &e))?;
        let mut base_mean: Vec<f64> = (0..g).map(|_| gamma.sample(&mut rng).max(1e-12)).collect();
        let med = median(&base_mean[..n_real]);
        let mut is_outlier = vec![false; g];
        for i in 0..n_real {
            if rng.uniform() < cfg.outlier_prob {
                is_outlier[i] = true;
                base_mean[i] = med * (cfg.outlier_loc + cfg.outlier_scale * normal(&mut rng)).exp();
            }
        }
        let is_mito: Vec<bool> = (0..g).map(|i| i >= n_real).collect();
        if cfg.n_mito > 0 {
            let real: f64 = base_mean[..n_real].iter().sum();
            let mito: f64 = base_mean[n_real..].iter().sum();
            let target = real * cfg.mito_fraction / (1.0 - cfg.mito_fraction);
            for m in &mut base_mean[n_real..] {
                *m *= target / mito;
                if *m <= 0.0 {
                    *m = 1e-12;
                }
            }
        }

        let chi = ChiSquared::new(cfg.bcv_df).map_err(|e| err("bcv_df", &e))?;
        let bcv_factor: Vec<f64> = (0..g).map(|_| (cfg.bcv_df / chi.sample(&mut rng).max(1e-12)).sqrt()).collect();

        // Cell types, grouped into lineages in contiguous blocks of near-equal size.
        let lineage_names = lineage_names(cfg.n_lineages);
        let mut type_lineage = Vec::with_capacity(cfg.n_types);
        let mut type_names = Vec::with_capacity(cfg.n_types);
        for (l, lname) in lineage_names.iter().enumerate() {
            let size = cfg.n_types / cfg.n_lineages + usize::from(l < cfg.n_types % cfg.n_lineages);
            for k in 0..size {
                type_lineage.push(l);
                type_names.push(format!("{lname}{}", k + 1));
            }
        }
        let raw_probs: Vec<f64> = if cfg.type_probs.is_empty() {
            (0..cfg.n_types).map(|t| 1.0 / (t as f64 + 2.0)).collect()
        } else {
            cfg.type_probs.clone()
        };
        let total: f64 = raw_probs.iter().sum();
        let type_probs: Vec<f64> = raw_probs.iter().map(|p| p / total).collect();

        let mut lineage_log_factors = Dense::<f64>::zeros(cfg.n_lineages, g);
        for l in 0..cfg.n_lineages {
            let row = lineage_log_factors.row_mut(l);
            for v in row[..n_real].iter_mut() {
                if rng.uniform() < cfg.lineage_de_prob {
                    *v = log_factor(&mut rng, cfg.lineage_de_loc, cfg.lineage_de_scale, cfg.de_down_prob);
                }
            }
        }
        let mut type_log_factors = Dense::<f64>::zeros(cfg.n_types, g);
        for t in 0..cfg.n_types {
            let row = type_log_factors.row_mut(t);
            for v in row[..n_real].iter_mut() {
                if rng.uniform() < cfg.de_prob {
                    *v = log_factor(&mut rng, cfg.de_loc, cfg.de_scale, cfg.de_down_prob);
                }
            }
        }
        let mut de_log_factors = Dense::<f64>::zeros(cfg.n_types, g);
        for (t, &l) in type_lineage.iter().enumerate() {
            for i in 0..g {
                de_log_factors.data[t * g + i] = lineage_log_factors.get(l, i) + type_log_factors.get(t, i);
            }
        }
        let type_lib_shift: Vec<f64> = (0..cfg.n_types).map(|_| cfg.type_lib_sd * normal(&mut rng)).collect();

        // Batches: contiguous blocks of cells, factors on every gene.
        let batch_names: Vec<String> = (1..=cfg.n_batches).map(|b| format!("Batch{b}")).collect();
        let fr: Vec<f64> =
            if cfg.batch_fractions.is_empty() { vec![1.0; cfg.n_batches] } else { cfg.batch_fractions.clone() };
        let fsum: f64 = fr.iter().sum();
        let mut batch_bounds = vec![0usize];
        let mut acc = 0.0;
        for (b, f) in fr.iter().enumerate() {
            acc += f;
            let end =
                if b + 1 == cfg.n_batches { cfg.n_cells } else { ((acc / fsum) * cfg.n_cells as f64).round() as usize };
            batch_bounds.push(end.clamp(*batch_bounds.last().unwrap(), cfg.n_cells));
        }
        let mut batch_log_factors = Dense::<f64>::zeros(cfg.n_batches, g);
        if cfg.n_batches > 1 {
            for v in batch_log_factors.data.iter_mut() {
                *v = log_factor(&mut rng, cfg.batch_loc, cfg.batch_scale, cfg.batch_down_prob);
            }
        }

        let nb = cfg.n_batches;
        let mut proportions = Dense::<f64>::zeros(cfg.n_types * nb, g);
        for t in 0..cfg.n_types {
            for b in 0..nb {
                let row = proportions.row_mut(t * nb + b);
                for i in 0..g {
                    row[i] = base_mean[i] * (de_log_factors.get(t, i) + batch_log_factors.get(b, i)).exp();
                }
                let s: f64 = row.iter().sum();
                for v in row.iter_mut() {
                    *v /= s;
                }
            }
        }

        let spatial = cfg.spatial.as_ref().map(|sp| {
            let mut r = Xoshiro::new(cfg.seed, STREAM_SPATIAL, 0);
            let k = cfg.n_types * sp.niches_per_type;
            let mut centres = Dense::<f64>::zeros(k, 2);
            let mut centre_type = Vec::with_capacity(k);
            for t in 0..cfg.n_types {
                for j in 0..sp.niches_per_type {
                    let row = centres.row_mut(t * sp.niches_per_type + j);
                    row[0] = r.uniform() * sp.size;
                    row[1] = r.uniform() * sp.size;
                    centre_type.push(t);
                }
            }
            SpatialTruth { centres, centre_type }
        });

        let perturbation = match &cfg.perturbation {
            None => None,
            Some(p) => {
                let mut r = Xoshiro::new(cfg.seed, STREAM_PERTURB, 0);
                // Genes ranked by base mean, highest first (non-mitochondrial only).
                let mut order: Vec<usize> = (0..n_real).collect();
                order.sort_by(|&a, &b| base_mean[b].total_cmp(&base_mean[a]).then(a.cmp(&b)));
                let gene_index: Vec<usize> = if p.genes.is_empty() {
                    // Among the top 30% (at least 2 × n_perturbed) by base mean.
                    let pool_len = ((n_real as f64 * 0.3) as usize).max(2 * p.n_perturbed).min(n_real);
                    let mut pool: Vec<usize> = order[..pool_len].to_vec();
                    shuffle_prefix(&mut pool, p.n_perturbed, &mut r);
                    pool[..p.n_perturbed].to_vec()
                } else {
                    p.genes.iter().map(|n| gene_names.iter().position(|x| x == n).unwrap_or(0)).collect()
                };
                let n_p = gene_index.len();
                let mut lfc = Dense::<f64>::zeros(n_p, g);
                // Targets are drawn among the upper half of genes by base mean, so their
                // changes are measurable.
                let target_pool: Vec<usize> = order[..(n_real / 2).max(p.n_targets + 1).min(n_real)].to_vec();
                for (k, &gi) in gene_index.iter().enumerate() {
                    let mut pool: Vec<usize> = target_pool.iter().copied().filter(|&x| x != gi).collect();
                    let n_t = p.n_targets.min(pool.len());
                    shuffle_prefix(&mut pool, n_t, &mut r);
                    let row = lfc.row_mut(k);
                    for &tg in &pool[..n_t] {
                        let mag = (p.effect_loc + p.effect_scale * normal(&mut r)).exp();
                        row[tg] = if r.uniform() < p.down_prob { -mag } else { mag };
                    }
                    row[gi] = p.knockdown.ln();
                }
                let genes = gene_index.iter().map(|&i| gene_names[i].clone()).collect();
                Some(PerturbTruth { genes, gene_index, lfc })
            }
        };

        Ok(GroundTruth {
            gene_names,
            base_mean,
            is_outlier,
            is_mito,
            bcv_factor,
            lineage_names,
            type_names,
            type_lineage,
            type_probs,
            type_lib_shift,
            lineage_log_factors,
            type_log_factors,
            de_log_factors,
            batch_names,
            batch_bounds,
            batch_log_factors,
            proportions,
            spatial,
            perturbation,
        })
    }

    /// Whether each gene is differentially expressed in at least one type (lineage or
    /// type-specific layer).
    pub fn is_de(&self) -> Vec<bool> {
        let g = self.gene_names.len();
        (0..g)
            .map(|i| {
                (0..self.de_log_factors.nrows).any(|t| self.type_log_factors.get(t, i) != 0.0)
                    || (0..self.lineage_log_factors.nrows).any(|l| self.lineage_log_factors.get(l, i) != 0.0)
            })
            .collect()
    }

    /// The ground truth as an `uns` tree (stored under `uns['simulation']` together with the
    /// config as JSON).
    pub fn to_value(&self, cfg: &SimConfig) -> Value {
        fn mat(d: &Dense<f64>) -> Value {
            Value::F64Array { shape: vec![d.nrows, d.ncols], data: d.data.clone() }
        }
        fn ints(v: &[usize]) -> Value {
            Value::I64Array { shape: vec![v.len()], data: v.iter().map(|&x| x as i64).collect() }
        }
        fn floats(v: &[f64]) -> Value {
            Value::F64Array { shape: vec![v.len()], data: v.to_vec() }
        }
        let mut m = BTreeMap::new();
        m.insert("config".to_string(), Value::Str(cfg.to_json()));
        m.insert("generator".to_string(), Value::Str(format!("sclm-sim {}", env!("CARGO_PKG_VERSION"))));
        m.insert("seed".to_string(), Value::I64(cfg.seed as i64));
        m.insert("lineage_names".to_string(), Value::Strings(self.lineage_names.clone()));
        m.insert("type_names".to_string(), Value::Strings(self.type_names.clone()));
        m.insert("type_lineage".to_string(), ints(&self.type_lineage));
        m.insert("type_probs".to_string(), floats(&self.type_probs));
        m.insert("type_lib_shift".to_string(), floats(&self.type_lib_shift));
        m.insert("bcv_factor".to_string(), floats(&self.bcv_factor));
        m.insert("lineage_log_factors".to_string(), mat(&self.lineage_log_factors));
        m.insert("type_log_factors".to_string(), mat(&self.type_log_factors));
        m.insert("de_log_factors".to_string(), mat(&self.de_log_factors));
        m.insert("batch_names".to_string(), Value::Strings(self.batch_names.clone()));
        m.insert("batch_log_factors".to_string(), mat(&self.batch_log_factors));
        if let Some(s) = &self.spatial {
            let mut sm = BTreeMap::new();
            sm.insert("niche_centres".to_string(), mat(&s.centres));
            sm.insert("niche_type".to_string(), ints(&s.centre_type));
            m.insert("spatial".to_string(), Value::Map(sm));
        }
        if let Some(p) = &self.perturbation {
            let mut pm = BTreeMap::new();
            pm.insert("genes".to_string(), Value::Strings(p.genes.clone()));
            pm.insert("gene_index".to_string(), ints(&p.gene_index));
            pm.insert("lfc".to_string(), mat(&p.lfc));
            m.insert("perturbation".to_string(), Value::Map(pm));
        }
        Value::Map(m)
    }
}

/// Partial Fisher–Yates: puts a uniform random sample of `k` elements in `v[..k]`.
fn shuffle_prefix(v: &mut [usize], k: usize, rng: &mut Xoshiro) {
    let n = v.len();
    for i in 0..k.min(n) {
        let j = rng.random_range(i..n);
        v.swap(i, j);
    }
}
