//! Simulation parameters.

use serde::{Deserialize, Serialize};

use crate::SimError;

/// Parameters of a simulation. Every field has a documented default (see
/// [`SimConfig::default`]); a JSON/TOML config may give only the fields it changes.
///
/// Logarithms are natural logarithms throughout. "Log-normal(loc, scale)" means
/// `exp(N(loc, scale²))`, as in Splatter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    /// Number of cells. Default 2000.
    pub n_cells: usize,
    /// Number of genes, mitochondrial genes included. Default 2000.
    pub n_genes: usize,
    /// Random seed: the same config and seed give the same data. Default 0.
    pub seed: u64,

    /// Number of cell types. Default 8.
    pub n_types: usize,
    /// Number of lineages the types are grouped into (types of one lineage share a lineage DE
    /// layer, so they resemble each other, as T-cell subtypes do). Between 1 and
    /// `min(n_types, 26)`. Default 3.
    pub n_lineages: usize,
    /// Relative abundance of each type (normalised to sum to 1). Empty (the default) means
    /// uneven, PBMC-like abundances proportional to `1 / (t + 2)` for type `t`.
    pub type_probs: Vec<f64>,

    /// Number of batches. Default 2.
    pub n_batches: usize,
    /// Fraction of cells in each batch (normalised to sum to 1). Cells are ordered by batch,
    /// as in Splatter. Empty (the default) means equal sizes.
    pub batch_fractions: Vec<f64>,

    /// Shape of the gamma distribution of gene base means. Default 0.6 (Splatter).
    pub mean_shape: f64,
    /// Rate of the gamma distribution of gene base means. Default 0.3 (Splatter).
    pub mean_rate: f64,
    /// Probability that a gene is a high-expression outlier. Default 0.06 (Splatter: 0.05).
    pub outlier_prob: f64,
    /// Location of the log-normal outlier factor (outlier mean = median mean × factor).
    /// Default 5.0 (Splatter: 4.0): outliers take more of the counts, so that with 2000 genes
    /// about 20% of the matrix is non-zero, as in real data.
    pub outlier_loc: f64,
    /// Scale of the log-normal outlier factor. Default 0.5 (Splatter).
    pub outlier_scale: f64,

    /// Location (log of the median) of the log-normal expected library size. Default
    /// `ln(3500) ≈ 8.16` (a 10x PBMC-like depth).
    pub lib_loc: f64,
    /// Scale of the log-normal library size. Default 0.35.
    pub lib_scale: f64,
    /// Standard deviation of a per-type shift of the log library size (some types are
    /// larger cells). 0 disables it. Default 0.15.
    pub type_lib_sd: f64,

    /// Probability that a gene is differentially expressed in a lineage (shared by all its
    /// types). Default 0.06.
    pub lineage_de_prob: f64,
    /// Location of the log-normal lineage DE factor. Default 0.7.
    pub lineage_de_loc: f64,
    /// Scale of the log-normal lineage DE factor. Default 0.4.
    pub lineage_de_scale: f64,
    /// Probability that a gene is differentially expressed in a type, on top of its lineage.
    /// Default 0.05.
    pub de_prob: f64,
    /// Location of the log-normal type DE factor. Default 0.7.
    pub de_loc: f64,
    /// Scale of the log-normal type DE factor. Default 0.4.
    pub de_scale: f64,
    /// Probability that a DE factor (lineage or type) lowers expression rather than raising
    /// it. Default 0.5 (Splatter).
    pub de_down_prob: f64,

    /// Location of the log-normal batch factor (every gene gets one per batch). Default 0.1
    /// (Splatter).
    pub batch_loc: f64,
    /// Scale of the log-normal batch factor. Default 0.1 (Splatter).
    pub batch_scale: f64,
    /// Probability that a batch factor lowers expression. Default 0.5.
    pub batch_down_prob: f64,

    /// Common biological coefficient of variation. Default 0.1 (Splatter).
    pub bcv_common: f64,
    /// Degrees of freedom of the per-gene BCV chi-squared factor. Default 60 (Splatter).
    pub bcv_df: f64,

    /// Number of mitochondrial genes (named `MT-...`, placed last). At most 13 get real
    /// mitochondrial symbols; more are named `MT-G14`, ... Default 13.
    pub n_mito: usize,
    /// Expected fraction of each cell's counts coming from mitochondrial genes. Default 0.04.
    pub mito_fraction: f64,
    /// Fraction of damaged (low-quality) cells: smaller libraries and a high mitochondrial
    /// share, flagged in `obs['sim_damaged']`, so that QC filters have something to find.
    /// Default 0.02.
    pub damaged_fraction: f64,
    /// Expected mitochondrial share of a damaged cell's counts. Default 0.3.
    pub damaged_mito_fraction: f64,
    /// Library-size multiplier of damaged cells. Default 0.4.
    pub damaged_lib_factor: f64,

    /// Logistic dropout of counts (zero-inflation), off by default as in Splatter.
    pub dropout: Option<DropoutConfig>,
    /// 2-D spatial coordinates with cell-type niches; off by default.
    pub spatial: Option<SpatialConfig>,
    /// Genetic perturbations (knock-downs) with downstream effects; off by default.
    pub perturbation: Option<PerturbConfig>,
}

/// Logistic dropout: a count of a gene with expected value `mu` in a cell is set to zero with
/// probability `1 / (1 + exp(-shape * (ln(mu) - mid)))`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DropoutConfig {
    /// Midpoint, in log expected count. Default 0.0 (Splatter).
    pub mid: f64,
    /// Shape; negative so that lowly expressed genes drop out more. Default -1.0 (Splatter).
    pub shape: f64,
}

/// Spatial layout: each cell type has `niches_per_type` niche centres drawn uniformly in the
/// square `[0, size]²`; a cell is placed around one of its type's centres (normal with
/// standard deviation `niche_sd`), or, with probability `mixing`, anywhere in the square.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SpatialConfig {
    /// Side of the square. Default 1000.0.
    pub size: f64,
    /// Niche centres per type. Default 3.
    pub niches_per_type: usize,
    /// Standard deviation of a cell around its niche centre. Default 40.0.
    pub niche_sd: f64,
    /// Probability that a cell is placed uniformly at random instead. Default 0.15.
    pub mixing: f64,
}

/// Knock-down perturbations (CRISPRi-like). Each perturbed gene gets a sparse set of target
/// genes with log-fold changes; a perturbed cell has the knocked-down gene's expected count
/// multiplied by `knockdown` and each target's by `exp(lfc)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PerturbConfig {
    /// Names of the genes to knock down. Empty (the default) lets the simulator choose
    /// `n_perturbed` genes among the more highly expressed non-mitochondrial genes.
    pub genes: Vec<String>,
    /// Number of genes to knock down when `genes` is empty. Default 10.
    pub n_perturbed: usize,
    /// Fraction of cells that are perturbed (the rest are `control`), split evenly between
    /// the perturbations. Default 0.5.
    pub fraction: f64,
    /// Remaining expression of a knocked-down gene (0 < knockdown ≤ 1). Default 0.15.
    pub knockdown: f64,
    /// Number of downstream target genes of each perturbation. Default 20.
    pub n_targets: usize,
    /// Location of the log-normal magnitude of a target's log-fold change. Default -0.5
    /// (median |lfc| ≈ 0.6, a 1.8-fold change).
    pub effect_loc: f64,
    /// Scale of the log-normal magnitude of a target's log-fold change. Default 0.5.
    pub effect_scale: f64,
    /// Probability that a target is repressed rather than induced. Default 0.5.
    pub down_prob: f64,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            n_cells: 2000,
            n_genes: 2000,
            seed: 0,
            n_types: 8,
            n_lineages: 3,
            type_probs: Vec::new(),
            n_batches: 2,
            batch_fractions: Vec::new(),
            mean_shape: 0.6,
            mean_rate: 0.3,
            outlier_prob: 0.06,
            outlier_loc: 5.0,
            outlier_scale: 0.5,
            lib_loc: 3500f64.ln(),
            lib_scale: 0.35,
            type_lib_sd: 0.15,
            lineage_de_prob: 0.06,
            lineage_de_loc: 0.7,
            lineage_de_scale: 0.4,
            de_prob: 0.05,
            de_loc: 0.7,
            de_scale: 0.4,
            de_down_prob: 0.5,
            batch_loc: 0.1,
            batch_scale: 0.1,
            batch_down_prob: 0.5,
            bcv_common: 0.1,
            bcv_df: 60.0,
            n_mito: 13,
            mito_fraction: 0.04,
            damaged_fraction: 0.02,
            damaged_mito_fraction: 0.3,
            damaged_lib_factor: 0.4,
            dropout: None,
            spatial: None,
            perturbation: None,
        }
    }
}

impl Default for DropoutConfig {
    fn default() -> Self {
        DropoutConfig { mid: 0.0, shape: -1.0 }
    }
}

impl Default for SpatialConfig {
    fn default() -> Self {
        SpatialConfig { size: 1000.0, niches_per_type: 3, niche_sd: 40.0, mixing: 0.15 }
    }
}

impl Default for PerturbConfig {
    fn default() -> Self {
        PerturbConfig {
            genes: Vec::new(),
            n_perturbed: 10,
            fraction: 0.5,
            knockdown: 0.15,
            n_targets: 20,
            effect_loc: -0.5,
            effect_scale: 0.5,
            down_prob: 0.5,
        }
    }
}

fn bad(msg: String) -> SimError {
    SimError::Config(msg)
}

fn check_finite(name: &str, v: f64) -> Result<(), SimError> {
    if v.is_finite() {
        Ok(())
    } else {
        Err(bad(format!("{name} must be a finite number, got {v}")))
    }
}

fn check_positive(name: &str, v: f64) -> Result<(), SimError> {
    if v.is_finite() && v > 0.0 {
        Ok(())
    } else {
        Err(bad(format!("{name} must be a positive number, got {v}")))
    }
}

fn check_non_negative(name: &str, v: f64) -> Result<(), SimError> {
    if v.is_finite() && v >= 0.0 {
        Ok(())
    } else {
        Err(bad(format!("{name} must be a non-negative number, got {v}")))
    }
}

fn check_prob(name: &str, v: f64) -> Result<(), SimError> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(bad(format!("{name} must be a probability in [0, 1], got {v}")))
    }
}

fn check_weights(name: &str, w: &[f64], expected: usize, what: &str) -> Result<(), SimError> {
    if w.is_empty() {
        return Ok(());
    }
    if w.len() != expected {
        return Err(bad(format!("{name} has {} entries but there are {expected} {what}", w.len())));
    }
    if let Some(v) = w.iter().find(|v| !v.is_finite() || **v < 0.0) {
        return Err(bad(format!("{name} must hold non-negative numbers, found {v}")));
    }
    if w.iter().sum::<f64>() <= 0.0 {
        return Err(bad(format!("{name} must not be all zero")));
    }
    Ok(())
}

impl SimConfig {
    /// A config from JSON text (missing fields take their defaults), validated.
    pub fn from_json(text: &str) -> Result<Self, SimError> {
        let cfg: SimConfig = serde_json::from_str(text).map_err(|e| bad(format!("cannot parse config JSON: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The config as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a SimConfig always serialises")
    }

    /// Checks every parameter, returning the first problem found as a one-line error that
    /// names the parameter.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.n_cells == 0 {
            return Err(bad("n_cells must be at least 1".into()));
        }
        if self.n_genes == 0 {
            return Err(bad("n_genes must be at least 1".into()));
        }
        if self.n_genes > u32::MAX as usize {
            return Err(bad(format!("n_genes must be below 2^32, got {}", self.n_genes)));
        }
        if self.n_mito >= self.n_genes {
            return Err(bad(format!("n_mito ({}) must be smaller than n_genes ({})", self.n_mito, self.n_genes)));
        }
        if self.n_types == 0 || self.n_types > u16::MAX as usize {
            return Err(bad(format!("n_types must be between 1 and 65535, got {}", self.n_types)));
        }
        if self.n_lineages == 0 || self.n_lineages > self.n_types.min(26) {
            return Err(bad(format!(
                "n_lineages must be between 1 and min(n_types, 26) = {}, got {}",
                self.n_types.min(26),
                self.n_lineages
            )));
        }
        if self.n_batches == 0 || self.n_batches > u16::MAX as usize {
            return Err(bad(format!("n_batches must be between 1 and 65535, got {}", self.n_batches)));
        }
        let table = (self.n_types as u128) * (self.n_batches as u128) * (self.n_genes as u128);
        if table > 200_000_000 {
            return Err(bad(format!(
                "n_types × n_batches × n_genes = {table} is too large (the expected-expression table would not fit in memory; at most 200000000)"
            )));
        }
        check_weights("type_probs", &self.type_probs, self.n_types, "cell types (n_types)")?;
        check_weights("batch_fractions", &self.batch_fractions, self.n_batches, "batches (n_batches)")?;
        check_positive("mean_shape", self.mean_shape)?;
        check_positive("mean_rate", self.mean_rate)?;
        check_prob("outlier_prob", self.outlier_prob)?;
        check_finite("outlier_loc", self.outlier_loc)?;
        check_non_negative("outlier_scale", self.outlier_scale)?;
        check_finite("lib_loc", self.lib_loc)?;
        if self.lib_loc > 25.0 {
            return Err(bad(format!(
                "lib_loc is the log of the median library size; {} is far too large",
                self.lib_loc
            )));
        }
        check_non_negative("lib_scale", self.lib_scale)?;
        check_non_negative("type_lib_sd", self.type_lib_sd)?;
        check_prob("lineage_de_prob", self.lineage_de_prob)?;
        check_finite("lineage_de_loc", self.lineage_de_loc)?;
        check_non_negative("lineage_de_scale", self.lineage_de_scale)?;
        check_prob("de_prob", self.de_prob)?;
        check_finite("de_loc", self.de_loc)?;
        check_non_negative("de_scale", self.de_scale)?;
        check_prob("de_down_prob", self.de_down_prob)?;
        check_finite("batch_loc", self.batch_loc)?;
        check_non_negative("batch_scale", self.batch_scale)?;
        check_prob("batch_down_prob", self.batch_down_prob)?;
        check_non_negative("bcv_common", self.bcv_common)?;
        check_positive("bcv_df", self.bcv_df)?;
        if !(self.mito_fraction.is_finite() && (0.0..1.0).contains(&self.mito_fraction)) {
            return Err(bad(format!("mito_fraction must be in [0, 1), got {}", self.mito_fraction)));
        }
        check_prob("damaged_fraction", self.damaged_fraction)?;
        if !(self.damaged_mito_fraction.is_finite() && (0.0..1.0).contains(&self.damaged_mito_fraction)) {
            return Err(bad(format!("damaged_mito_fraction must be in [0, 1), got {}", self.damaged_mito_fraction)));
        }
        check_positive("damaged_lib_factor", self.damaged_lib_factor)?;
        if let Some(d) = &self.dropout {
            check_finite("dropout.mid", d.mid)?;
            check_finite("dropout.shape", d.shape)?;
        }
        if let Some(s) = &self.spatial {
            check_positive("spatial.size", s.size)?;
            if s.niches_per_type == 0 {
                return Err(bad("spatial.niches_per_type must be at least 1".into()));
            }
            check_non_negative("spatial.niche_sd", s.niche_sd)?;
            check_prob("spatial.mixing", s.mixing)?;
        }
        if let Some(p) = &self.perturbation {
            let n_real = self.n_genes - self.n_mito;
            if p.genes.is_empty() {
                if p.n_perturbed == 0 {
                    return Err(bad(
                        "perturbation.n_perturbed must be at least 1 when perturbation.genes is empty".into()
                    ));
                }
                if p.n_perturbed > n_real / 2 {
                    return Err(bad(format!(
                        "perturbation.n_perturbed ({}) must be at most half the non-mitochondrial genes ({})",
                        p.n_perturbed,
                        n_real / 2
                    )));
                }
            } else {
                let names = crate::model::gene_names(self.n_genes, self.n_mito);
                let mut seen = std::collections::HashSet::new();
                for g in &p.genes {
                    let Some(pos) = names.iter().position(|n| n == g) else {
                        return Err(bad(format!(
                            "perturbation.genes: no gene named '{g}' (genes are named like '{}')",
                            names[0]
                        )));
                    };
                    if pos >= n_real {
                        return Err(bad(format!("perturbation.genes: '{g}' is mitochondrial and cannot be perturbed")));
                    }
                    if !seen.insert(g) {
                        return Err(bad(format!("perturbation.genes: '{g}' is listed twice")));
                    }
                    if g == "control" {
                        return Err(bad("perturbation.genes: 'control' is reserved".into()));
                    }
                }
            }
            check_prob("perturbation.fraction", p.fraction)?;
            if !(p.knockdown.is_finite() && p.knockdown > 0.0 && p.knockdown <= 1.0) {
                return Err(bad(format!("perturbation.knockdown must be in (0, 1], got {}", p.knockdown)));
            }
            if p.n_targets > n_real.saturating_sub(1) {
                return Err(bad(format!(
                    "perturbation.n_targets ({}) must be below the number of non-mitochondrial genes ({n_real})",
                    p.n_targets
                )));
            }
            check_finite("perturbation.effect_loc", p.effect_loc)?;
            check_non_negative("perturbation.effect_scale", p.effect_scale)?;
            check_prob("perturbation.down_prob", p.down_prob)?;
        }
        Ok(())
    }
}
