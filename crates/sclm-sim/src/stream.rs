//! The chunked generator: cell-level labels drawn up front, counts drawn chunk by chunk.

use std::collections::BTreeMap;

use rand_distr::{Distribution, Gamma, Poisson, StandardNormal};
use rayon::prelude::*;
use sclm_data::{AnnData, Array2, Column, CsrMatrix, DataFrame, Dense, Matrix, Value};

use crate::model::{GroundTruth, STREAM_CELLS, STREAM_COUNTS, STREAM_DROPOUT};
use crate::rng::Xoshiro;
use crate::{SimConfig, SimError};

/// Expected counts at or above this are drawn directly as gamma then Poisson; below it the
/// sparse compound-Poisson sampler is used (see [`SimStream`]).
const DIRECT_MEAN: f64 = 10.0;

/// Label of unperturbed cells in `obs['perturbation']`.
pub const CONTROL: &str = "control";

/// Cells per rayon task inside a chunk.
const BLOCK: usize = 64;

/// A simulation ready to stream: gene-level ground truth and every cell's labels are drawn;
/// counts are drawn on demand, chunk by chunk.
///
/// # Determinism
///
/// Every cell's labels come from a random stream seeded by `(seed, cell index)` and its counts
/// from another stream seeded the same way, so the output depends only on the config
/// (seed included), never on the chunk size or the number of threads: rows `a..b` are the
/// same whether drawn alone or as part of a larger chunk.
///
/// # Sampling
///
/// A cell `c` of type `t` in batch `b` with library size `L` expects `mu = L * share[t, b, g]`
/// counts of gene `g` (times `exp(lfc)` if perturbed). As in Splatter, the count is
/// gamma–Poisson (negative binomial) with `BCV = (bcv_common + 1/sqrt(mu)) * bcv_factor[g]`,
/// i.e. dispersion `phi = BCV²`. Most expected counts are far below 1, so the sampler avoids
/// per-gene transcendental functions: it writes the negative binomial as a compound Poisson,
/// `N ~ Poisson(nu)` clusters with `nu = ln(1 + mu*phi) / phi` and logarithmic cluster sizes,
/// and uses `P(count > 0) = 1 - exp(-nu) <= mu` to reject most genes with one uniform draw
/// and a comparison. The draws are exact (no approximation): the shortcut only skips work
/// whose outcome is already known. Genes with `mu >= 10` are drawn as gamma then Poisson.
#[derive(Debug, Clone)]
pub struct SimStream {
    cfg: SimConfig,
    truth: GroundTruth,
    cell_type: Vec<u16>,
    cell_batch: Vec<u16>,
    lib_size: Vec<f64>,
    /// Whether each cell is damaged (low quality).
    damaged: Vec<bool>,
    /// Per (type, batch) group: multipliers of non-mitochondrial and mitochondrial expected
    /// counts in a damaged cell (bringing the mitochondrial share to `damaged_mito_fraction`).
    damaged_mult: Vec<(f64, f64)>,
    /// Perturbation index per cell, −1 for control (empty when perturbations are off).
    cell_pert: Vec<i32>,
    /// Spatial coordinates, row-major n × 2 (empty when spatial is off).
    coords: Vec<f64>,
    /// Sorted (gene, multiplier) lists per perturbation.
    pert_effects: Vec<Vec<(u32, f64)>>,
    /// Per gene, `ln(1 + f²) / f²` with `f` the BCV factor: `P(count > 0) <= mu * bound`.
    nz_bound: Vec<f64>,
}

/// One chunk of consecutive cells.
#[derive(Debug, Clone, PartialEq)]
pub struct SimChunk {
    /// Index of the chunk's first cell.
    pub start: usize,
    /// Raw counts of the chunk's cells (rows) over all genes, integers stored as `f32`.
    pub counts: CsrMatrix,
    /// The chunk's rows of [`SimStream::obs`].
    pub obs: DataFrame,
    /// The chunk's rows of `obsm['spatial']`, when spatial coordinates are simulated.
    pub spatial: Option<Dense<f64>>,
}

impl SimStream {
    /// Validates `cfg`, draws the gene-level parameters and every cell's labels (type, batch,
    /// library size, perturbation, coordinates). Costs O(n_cells + n_types × n_batches ×
    /// n_genes); no counts are drawn.
    pub fn new(cfg: &SimConfig) -> Result<Self, SimError> {
        cfg.validate()?;
        let truth = GroundTruth::draw(cfg)?;
        let n = cfg.n_cells;
        // Cumulative type probabilities.
        let mut cum = Vec::with_capacity(cfg.n_types);
        let mut acc = 0.0;
        for p in &truth.type_probs {
            acc += p;
            cum.push(acc);
        }
        let n_pert = truth.perturbation.as_ref().map_or(0, |p| p.genes.len());
        let pert_fraction = cfg.perturbation.as_ref().map_or(0.0, |p| p.fraction);
        struct CellDraw {
            t: u16,
            b: u16,
            lib: f64,
            damaged: bool,
            pert: i32,
            xy: [f64; 2],
        }
        let draws: Vec<CellDraw> = (0..n)
            .into_par_iter()
            .with_min_len(4096)
            .map(|c| {
                let mut rng = Xoshiro::new(cfg.seed, STREAM_CELLS, c as u64);
                let b = truth.batch_bounds[1..].partition_point(|&e| e <= c).min(cfg.n_batches - 1);
                let u = rng.uniform();
                let t = cum.partition_point(|&x| x <= u).min(cfg.n_types - 1);
                let z: f64 = StandardNormal.sample(&mut rng);
                let mut lib = (cfg.lib_loc + truth.type_lib_shift[t] + cfg.lib_scale * z).exp();
                let damaged = rng.uniform() < cfg.damaged_fraction;
                if damaged {
                    lib *= cfg.damaged_lib_factor;
                }
                let mut pert = -1;
                if n_pert > 0 && rng.uniform() < pert_fraction {
                    pert = ((rng.uniform() * n_pert as f64) as usize).min(n_pert - 1) as i32;
                }
                let mut xy = [0.0; 2];
                if let (Some(sp), Some(st)) = (&cfg.spatial, &truth.spatial) {
                    if rng.uniform() < sp.mixing {
                        xy = [rng.uniform() * sp.size, rng.uniform() * sp.size];
                    } else {
                        let j = ((rng.uniform() * sp.niches_per_type as f64) as usize).min(sp.niches_per_type - 1);
                        let centre = st.centres.row(t * sp.niches_per_type + j);
                        for (d, v) in xy.iter_mut().enumerate() {
                            let z: f64 = StandardNormal.sample(&mut rng);
                            *v = reflect(centre[d] + sp.niche_sd * z, sp.size);
                        }
                    }
                }
                CellDraw { t: t as u16, b: b as u16, lib, damaged, pert, xy }
            })
            .collect();
        let cell_type = draws.iter().map(|d| d.t).collect();
        let cell_batch = draws.iter().map(|d| d.b).collect();
        let lib_size = draws.iter().map(|d| d.lib).collect();
        let damaged = draws.iter().map(|d| d.damaged).collect();
        let n_real = cfg.n_genes - cfg.n_mito;
        let damaged_mult = (0..cfg.n_types * cfg.n_batches)
            .map(|k| {
                let row = truth.proportions.row(k);
                let mt: f64 = row[n_real..].iter().sum();
                if cfg.n_mito == 0 || mt <= 0.0 || mt >= 1.0 {
                    (1.0, 1.0)
                } else {
                    let target = cfg.damaged_mito_fraction;
                    ((1.0 - target) / (1.0 - mt), target / mt)
                }
            })
            .collect();
        let cell_pert = if n_pert > 0 { draws.iter().map(|d| d.pert).collect() } else { Vec::new() };
        let coords = if cfg.spatial.is_some() { draws.iter().flat_map(|d| d.xy).collect() } else { Vec::new() };
        let pert_effects = match &truth.perturbation {
            None => Vec::new(),
            Some(p) => (0..p.lfc.nrows)
                .map(|k| {
                    p.lfc
                        .row(k)
                        .iter()
                        .enumerate()
                        .filter(|(_, &v)| v != 0.0)
                        .map(|(g, &v)| (g as u32, v.exp()))
                        .collect()
                })
                .collect(),
        };
        // With x = mu * phi = (bcv_common * sqrt(mu) + 1)² f² >= f², nu / mu = ln(1 + x) / x is
        // at most ln(1 + f²) / f², which bounds the probability of a non-zero count.
        let nz_bound = truth
            .bcv_factor
            .iter()
            .map(|&f| {
                let f2 = f * f;
                if f2 > 0.0 {
                    (f2.ln_1p() / f2).min(1.0)
                } else {
                    1.0
                }
            })
            .collect();
        Ok(SimStream {
            cfg: cfg.clone(),
            truth,
            cell_type,
            cell_batch,
            lib_size,
            damaged,
            damaged_mult,
            cell_pert,
            coords,
            pert_effects,
            nz_bound,
        })
    }

    /// The (validated) config.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// The gene-level ground truth.
    pub fn truth(&self) -> &GroundTruth {
        &self.truth
    }

    /// Number of cells.
    pub fn n_cells(&self) -> usize {
        self.cfg.n_cells
    }

    /// Number of genes.
    pub fn n_genes(&self) -> usize {
        self.cfg.n_genes
    }

    /// Cell type index of every cell (into [`GroundTruth::type_names`]).
    pub fn cell_types(&self) -> &[u16] {
        &self.cell_type
    }

    /// Batch index of every cell (into [`GroundTruth::batch_names`]).
    pub fn cell_batches(&self) -> &[u16] {
        &self.cell_batch
    }

    /// Expected library size of every cell (the sum of its expected counts when control).
    pub fn library_sizes(&self) -> &[f64] {
        &self.lib_size
    }

    /// Whether each cell is damaged (low quality: small library, high mitochondrial share).
    pub fn damaged(&self) -> &[bool] {
        &self.damaged
    }

    /// Perturbation index of every cell (into [`crate::PerturbTruth::genes`]), `None` for a
    /// control cell; `None` everywhere when perturbations are off.
    pub fn cell_perturbation(&self, cell: usize) -> Option<usize> {
        self.cell_pert.get(cell).and_then(|&p| usize::try_from(p).ok())
    }

    /// Cell names: `Cell0001`, ... zero-padded to at least four digits.
    pub fn obs_names(&self) -> Vec<String> {
        self.obs_names_range(0, self.n_cells())
    }

    fn obs_names_range(&self, start: usize, end: usize) -> Vec<String> {
        let width = self.n_cells().to_string().len().max(4);
        (start..end).map(|i| format!("Cell{:0width$}", i + 1)).collect()
    }

    /// Cell annotations for all cells, computed without drawing counts: `cell_type`,
    /// `lineage`, `batch` (categoricals), `sim_library_size` (expected library size, float64),
    /// `sim_damaged` (bool: a low-quality cell) and, with perturbations, `perturbation` (categorical: `control` or the gene name).
    pub fn obs(&self) -> DataFrame {
        self.obs_range(0, self.n_cells())
    }

    /// Rows `start..end` of [`SimStream::obs`].
    pub fn obs_range(&self, start: usize, end: usize) -> DataFrame {
        let tr = &self.truth;
        let mut df = DataFrame::new(self.obs_names_range(start, end));
        let cat = |codes: Vec<i32>, categories: Vec<String>| Column::Categorical { codes, categories, ordered: false };
        let types = &self.cell_type[start..end];
        // Insertion cannot fail: every column has end - start rows.
        let _ = df.insert("cell_type", cat(types.iter().map(|&t| t as i32).collect(), tr.type_names.clone()));
        let _ = df.insert(
            "lineage",
            cat(types.iter().map(|&t| tr.type_lineage[t as usize] as i32).collect(), tr.lineage_names.clone()),
        );
        let _ = df.insert(
            "batch",
            cat(self.cell_batch[start..end].iter().map(|&b| b as i32).collect(), tr.batch_names.clone()),
        );
        let _ = df.insert("sim_library_size", Column::F64(self.lib_size[start..end].to_vec()));
        let _ = df.insert("sim_damaged", Column::Bool(self.damaged[start..end].to_vec()));
        if let Some(p) = &tr.perturbation {
            let mut cats = vec![CONTROL.to_string()];
            cats.extend(p.genes.iter().cloned());
            let _ = df.insert("perturbation", cat(self.cell_pert[start..end].iter().map(|&k| k + 1).collect(), cats));
        }
        df
    }

    /// Spatial coordinates (`obsm['spatial']`, n × 2, float64), when simulated.
    pub fn spatial(&self) -> Option<Dense<f64>> {
        self.spatial_range(0, self.n_cells())
    }

    fn spatial_range(&self, start: usize, end: usize) -> Option<Dense<f64>> {
        self.cfg.spatial.as_ref()?;
        Some(Dense { nrows: end - start, ncols: 2, data: self.coords[2 * start..2 * end].to_vec() })
    }

    /// `obsm` entries (`spatial` when simulated).
    pub fn obsm(&self) -> BTreeMap<String, Array2> {
        let mut m = BTreeMap::new();
        if let Some(s) = self.spatial() {
            m.insert("spatial".to_string(), Array2::F64(s));
        }
        m
    }

    /// Gene annotations: `base_mean` (float64), `is_outlier`, `is_de` (DE in any type), `mt`
    /// (mitochondrial) and, with perturbations, `is_perturbed` (knocked down in some cells)
    /// and `is_perturbation_target` (booleans).
    pub fn var(&self) -> DataFrame {
        let tr = &self.truth;
        let mut df = DataFrame::new(tr.gene_names.clone());
        let _ = df.insert("base_mean", Column::F64(tr.base_mean.clone()));
        let _ = df.insert("is_outlier", Column::Bool(tr.is_outlier.clone()));
        let _ = df.insert("is_de", Column::Bool(tr.is_de()));
        let _ = df.insert("mt", Column::Bool(tr.is_mito.clone()));
        if let Some(p) = &tr.perturbation {
            let g = self.n_genes();
            let mut perturbed = vec![false; g];
            for &i in &p.gene_index {
                perturbed[i] = true;
            }
            let mut target = vec![false; g];
            for (k, &gi) in p.gene_index.iter().enumerate() {
                for (i, &v) in p.lfc.row(k).iter().enumerate() {
                    if v != 0.0 && i != gi {
                        target[i] = true;
                    }
                }
            }
            let _ = df.insert("is_perturbed", Column::Bool(perturbed));
            let _ = df.insert("is_perturbation_target", Column::Bool(target));
        }
        df
    }

    /// `uns` entries: `simulation` holds the config (JSON string) and the ground truth (see
    /// [`GroundTruth::to_value`]).
    pub fn uns(&self) -> BTreeMap<String, Value> {
        let mut m = BTreeMap::new();
        m.insert("simulation".to_string(), self.truth.to_value(&self.cfg));
        m
    }

    /// An AnnData with every part of the simulation except the counts: `X` is an all-zero
    /// CSR matrix of the right shape. This is the template a streaming h5ad writer takes;
    /// the rows of `X` then come from [`SimStream::chunks`].
    pub fn template(&self) -> AnnData {
        let mut a = AnnData::new(Matrix::Csr(CsrMatrix::zeros(self.n_cells(), self.n_genes())));
        a.obs = self.obs();
        a.var = self.var();
        a.obsm = self.obsm();
        a.uns = self.uns();
        a
    }

    /// Draws the counts of cells `start..end` (in parallel over blocks of cells).
    pub fn counts_range(&self, start: usize, end: usize) -> Result<CsrMatrix, SimError> {
        if start > end || end > self.n_cells() {
            return Err(SimError::Config(format!(
                "cell range {start}..{end} is out of bounds (n_cells = {})",
                self.n_cells()
            )));
        }
        let blocks: Vec<(usize, usize)> = (start..end).step_by(BLOCK).map(|a| (a, (a + BLOCK).min(end))).collect();
        let parts: Vec<(Vec<usize>, Vec<u32>, Vec<f32>)> = blocks
            .par_iter()
            .map(|&(a, b)| {
                let mut indptr = Vec::with_capacity(b - a);
                let mut indices = Vec::new();
                let mut data = Vec::new();
                for c in a..b {
                    self.sample_cell(c, &mut indices, &mut data);
                    indptr.push(data.len());
                }
                (indptr, indices, data)
            })
            .collect();
        let nnz: usize = parts.iter().map(|p| p.2.len()).sum();
        let mut indptr = Vec::with_capacity(end - start + 1);
        let mut indices = Vec::with_capacity(nnz);
        let mut data = Vec::with_capacity(nnz);
        indptr.push(0);
        for (ip, ix, dt) in parts {
            let base = data.len();
            indptr.extend(ip.iter().map(|o| o + base));
            indices.extend_from_slice(&ix);
            data.extend_from_slice(&dt);
        }
        Ok(CsrMatrix { nrows: end - start, ncols: self.n_genes(), indptr, indices, data })
    }

    /// Draws cells `start..end` as one chunk (counts, obs rows, coordinates).
    pub fn chunk(&self, start: usize, end: usize) -> Result<SimChunk, SimError> {
        let counts = self.counts_range(start, end)?;
        Ok(SimChunk { start, counts, obs: self.obs_range(start, end), spatial: self.spatial_range(start, end) })
    }

    /// Iterates over consecutive chunks of at most `chunk_size` cells (a `chunk_size` of 0 is
    /// treated as 1). The concatenated chunks are identical whatever the chunk size.
    pub fn chunks(&self, chunk_size: usize) -> impl Iterator<Item = Result<SimChunk, SimError>> + '_ {
        let size = chunk_size.max(1);
        (0..self.n_cells()).step_by(size).map(move |a| self.chunk(a, (a + size).min(self.n_cells())))
    }

    /// Appends the non-zero counts of cell `c` to `indices` / `data` (columns increasing).
    fn sample_cell(&self, c: usize, indices: &mut Vec<u32>, data: &mut Vec<f32>) {
        let g_n = self.n_genes();
        let t = self.cell_type[c] as usize;
        let b = self.cell_batch[c] as usize;
        let nb = self.cfg.n_batches;
        let share = &self.truth.proportions.data[(t * nb + b) * g_n..(t * nb + b + 1) * g_n];
        let chi = &self.truth.bcv_factor;
        let nz_bound = &self.nz_bound;
        let lib = self.lib_size[c];
        // Genes from `n_real` on are mitochondrial; damaged cells shift counts towards them.
        let n_real = g_n - self.cfg.n_mito;
        let (mult_real, mult_mt) = if self.damaged[c] { self.damaged_mult[t * nb + b] } else { (1.0, 1.0) };
        let (lib_real, lib_mt) = (lib * mult_real, lib * mult_mt);
        let common = self.cfg.bcv_common;
        let dropout = self.cfg.dropout.as_ref().map(|d| (d.mid, d.shape));
        let effects: &[(u32, f64)] = match self.cell_perturbation(c) {
            Some(k) => &self.pert_effects[k],
            None => &[],
        };
        let mut next_eff = 0usize;
        let mut rng = Xoshiro::new(self.cfg.seed, STREAM_COUNTS, c as u64);
        // Dropout has its own stream: turning it on removes counts without changing the others.
        let mut drop_rng = dropout.map(|_| Xoshiro::new(self.cfg.seed, STREAM_DROPOUT, c as u64));
        let mut spare: u64 = 0;
        let mut have_spare = false;
        const INV32: f64 = 1.0 / 4_294_967_296.0;
        for g in 0..g_n {
            let mut mu = (if g < n_real { lib_real } else { lib_mt }) * share[g];
            if next_eff < effects.len() && effects[next_eff].0 as usize == g {
                mu *= effects[next_eff].1;
                next_eff += 1;
            }
            let count: u64 = if mu >= DIRECT_MEAN {
                let bcv = (common + 1.0 / mu.sqrt()) * chi[g];
                let phi = bcv * bcv;
                direct_nb(&mut rng, mu, phi)
            } else {
                // One 32-bit uniform per gene: two genes per 64-bit draw.
                let bits = if have_spare {
                    have_spare = false;
                    (spare >> 32) as u32
                } else {
                    spare = rand::RngCore::next_u64(&mut rng);
                    have_spare = true;
                    spare as u32
                };
                let u = (bits as f64 + 0.5) * INV32;
                if u >= mu * nz_bound[g] {
                    continue;
                }
                let bcv = (common + 1.0 / mu.sqrt()) * chi[g];
                let phi = bcv * bcv;
                compound_nb(&mut rng, u, mu, phi)
            };
            if count == 0 {
                continue;
            }
            if let (Some((mid, shape)), Some(dr)) = (dropout, drop_rng.as_mut()) {
                let p_drop = 1.0 / (1.0 + (-shape * (mu.ln() - mid)).exp());
                if dr.uniform() < p_drop {
                    continue;
                }
            }
            indices.push(g as u32);
            data.push(count as f32);
        }
    }
}

/// Reflects `v` into `[0, size]`.
fn reflect(v: f64, size: f64) -> f64 {
    let period = 2.0 * size;
    let mut r = v.rem_euclid(period);
    if r > size {
        r = period - r;
    }
    r
}

/// Negative binomial (mean `mu`, dispersion `phi`) as gamma then Poisson.
fn direct_nb(rng: &mut Xoshiro, mu: f64, phi: f64) -> u64 {
    let lambda = match Gamma::new(1.0 / phi, mu * phi) {
        Ok(g) => g.sample(rng),
        Err(_) => mu,
    };
    if lambda <= 0.0 {
        return 0;
    }
    match Poisson::new(lambda) {
        Ok(p) => {
            let v: f64 = p.sample(rng);
            v as u64
        }
        Err(_) => 0,
    }
}

/// Negative binomial (mean `mu`, dispersion `phi`) given the uniform `u` that decides
/// whether the count is zero (`u < P(count > 0)`), as a compound Poisson: `N ~ Poisson(nu)`
/// clusters, `nu = ln(1 + mu*phi) / phi`, each of logarithmic size with parameter
/// `p = mu*phi / (1 + mu*phi)`. `u` is reused to draw `N` by inversion, so the result is an
/// exact draw.
#[inline]
fn compound_nb(rng: &mut Xoshiro, u: f64, mu: f64, phi: f64) -> u64 {
    let x = mu * phi;
    // x >= bcv_factor² is of order 1, so ln(1 + x) needs no ln_1p.
    let l1p = (1.0 + x).ln();
    let nu = l1p / phi;
    // P(count > 0) = 1 - exp(-nu) <= nu: most candidates stop here without an exp.
    if u >= nu {
        return 0;
    }
    let p0 = (-nu).exp();
    let s = 1.0 - u;
    if s <= p0 {
        return 0;
    }
    // Number of clusters, by inversion of the Poisson CDF with s (given N >= 1).
    let mut k = 1u64;
    let mut term = p0 * nu;
    let mut cdf = p0 + term;
    while s > cdf && k < 1000 {
        k += 1;
        term *= nu / k as f64;
        cdf += term;
        if term < 1e-300 {
            break;
        }
    }
    // Cluster sizes: logarithmic(p), P(j) = p^j / (j * ln(1 + x)), by inversion.
    let p = x / (1.0 + x);
    let p1 = p / l1p;
    let mut total = 0u64;
    for _ in 0..k {
        let v = rng.uniform();
        let mut j = 1u64;
        let mut pj = p1;
        let mut c = pj;
        while v > c && j < 100_000 {
            pj *= p * j as f64 / (j + 1) as f64;
            j += 1;
            c += pj;
            if pj < 1e-300 {
                break;
            }
        }
        total += j;
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Draws as `sample_cell` does: the cheap rejection, then the compound sampler; or the
    /// direct sampler for large means.
    fn draw(rng: &mut Xoshiro, mu: f64, chi: f64, common: f64) -> u64 {
        let bcv = (common + 1.0 / mu.sqrt()) * chi;
        let phi = bcv * bcv;
        if mu >= DIRECT_MEAN {
            return direct_nb(rng, mu, phi);
        }
        let f2 = chi * chi;
        let bound = (f2.ln_1p() / f2).min(1.0);
        let u = (rand::RngCore::next_u32(rng) as f64 + 0.5) / 4_294_967_296.0;
        if u >= mu * bound {
            return 0;
        }
        compound_nb(rng, u, mu, phi)
    }

    #[test]
    fn sampler_matches_negative_binomial_moments_and_zero_probability() {
        let mut rng = Xoshiro::new(11, 99, 0);
        for &(mu, chi) in &[(0.02, 1.0), (0.3, 0.8), (1.5, 1.2), (6.0, 1.0), (9.9, 1.1), (40.0, 1.0)] {
            let common = 0.1;
            let bcv: f64 = (common + 1.0 / f64::sqrt(mu)) * chi;
            let phi = bcv * bcv;
            let n = 200_000;
            let xs: Vec<f64> = (0..n).map(|_| draw(&mut rng, mu, chi, common) as f64).collect();
            let mean = xs.iter().sum::<f64>() / n as f64;
            let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
            let p0 = xs.iter().filter(|&&x| x == 0.0).count() as f64 / n as f64;
            let want_var = mu + phi * mu * mu;
            let want_p0 = (1.0 + mu * phi).powf(-1.0 / phi);
            // Standard error of the mean is sqrt(var / n).
            let se = (want_var / n as f64).sqrt();
            assert!((mean - mu).abs() < 5.0 * se, "mu {mu}: mean {mean}");
            assert!((var / want_var - 1.0).abs() < 0.1, "mu {mu}: var {var} vs {want_var}");
            assert!((p0 - want_p0).abs() < 0.005, "mu {mu}: P(0) {p0} vs {want_p0}");
        }
    }

    #[test]
    fn reflect_stays_in_the_square() {
        for v in [-1500.0, -10.0, 0.0, 500.0, 1000.0, 1010.0, 2500.0] {
            let r = reflect(v, 1000.0);
            assert!((0.0..=1000.0).contains(&r), "{v} -> {r}");
        }
        assert_eq!(reflect(1010.0, 1000.0), 990.0);
        assert_eq!(reflect(-10.0, 1000.0), 10.0);
    }
}
