//! Embeddings: gene-embedding bag over a sparse cell × gene matrix (CellPLM §3.2, Eq. 3),
//! binned-expression embedding (CellLM §3.2 expression encoder), learned or frozen gene
//! embedding tables, 1-D and 2-D sinusoidal positional encodings (CellPLM appendix B) and
//! categorical (batch) embeddings.
use burn::module::Param;
use burn::prelude::*;
use burn::tensor::Distribution;

use crate::util::{int1, tensor_from, to_vec};
use crate::NnError;

/// Borrowed rows of a CSR matrix (same layout as sclm-data's `CsrMatrix`: `f32` values, `u32`
/// column indices, `usize` row pointers).
#[derive(Debug, Clone, Copy)]
pub struct CsrRows<'a> {
    /// Number of columns (genes).
    pub n_cols: usize,
    /// Row pointers, length `n_rows + 1`.
    pub indptr: &'a [usize],
    /// Column index of each stored value.
    pub indices: &'a [u32],
    /// Stored values.
    pub data: &'a [f32],
    /// Per-row totals over every gene the dataset measured, when the rows were re-indexed
    /// onto a vocabulary that drops some of them (`None`: the rows hold every gene). Models
    /// that normalise by the raw library size (LangCell's rank-value encoding) read it.
    pub totals: Option<&'a [f32]>,
}

impl<'a> CsrRows<'a> {
    /// Wraps CSR slices after checking their consistency.
    pub fn new(n_cols: usize, indptr: &'a [usize], indices: &'a [u32], data: &'a [f32]) -> Result<Self, NnError> {
        if indptr.is_empty() || indptr[0] != 0 {
            return Err(NnError::Shape("CSR indptr must start with 0".into()));
        }
        if indptr.windows(2).any(|w| w[1] < w[0]) {
            return Err(NnError::Shape("CSR indptr must be non-decreasing".into()));
        }
        let nnz = *indptr.last().unwrap_or(&0);
        if indices.len() != nnz || data.len() != nnz {
            return Err(NnError::Shape(format!(
                "CSR has {} indices and {} values but indptr ends at {nnz}",
                indices.len(),
                data.len()
            )));
        }
        if let Some(bad) = indices.iter().find(|&&c| c as usize >= n_cols) {
            return Err(NnError::Shape(format!("CSR column index {bad} out of range for {n_cols} columns")));
        }
        Ok(Self { n_cols, indptr, indices, data, totals: None })
    }

    /// The same rows with per-row raw totals (one per row).
    pub fn with_totals(self, totals: &'a [f32]) -> Result<Self, NnError> {
        if totals.len() != self.n_rows() {
            return Err(NnError::Shape(format!("{} row totals for {} rows", totals.len(), self.n_rows())));
        }
        Ok(Self { totals: Some(totals), ..self })
    }

    /// The total of row `i` over every gene the dataset measured ([`CsrRows::totals`]), or over
    /// the stored values when no totals were given.
    pub fn row_total(&self, i: usize) -> f32 {
        match self.totals {
            Some(t) => t[i],
            None => self.data[self.indptr[i]..self.indptr[i + 1]].iter().sum(),
        }
    }

    /// Number of rows.
    pub fn n_rows(&self) -> usize {
        self.indptr.len() - 1
    }

    /// The sub-matrix of rows `start..end`, with row pointers rebased (copied).
    pub fn row_block(&self, start: usize, end: usize) -> (Vec<usize>, &'a [u32], &'a [f32]) {
        let (a, b) = (self.indptr[start], self.indptr[end]);
        let ptr = self.indptr[start..=end].iter().map(|p| p - a).collect();
        (ptr, &self.indices[a..b], &self.data[a..b])
    }
}

/// How stored values are transformed before weighting gene embeddings.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum ValueTransform {
    /// Use the values as given.
    Identity,
    /// `log(1 + x)` (CellPLM applies it to raw counts).
    Log1p,
}

/// Configuration of [`GeneEmbeddingBag`].
#[derive(Config, Debug)]
pub struct GeneEmbeddingBagConfig {
    /// Number of genes (rows of the table).
    pub n_genes: usize,
    /// Embedding dimension.
    pub d_model: usize,
    /// Value transform (default log1p, as CellPLM).
    #[config(default = "ValueTransform::Log1p")]
    pub transform: ValueTransform,
    /// Standard deviation of the normal initialisation (default 0.02).
    #[config(default = 0.02)]
    pub init_std: f64,
    /// Cells per block in the sparse forward (bounds the dense `cells × present genes` block;
    /// default 1024).
    #[config(default = 1024)]
    pub block_rows: usize,
}

/// Cell embedding as a bag of gene embeddings: row `i` = Σ_j f(x_ij) · h_j.
///
/// The forward never touches genes absent from the input: for each block of cells it selects
/// the rows of the genes that occur (`index_select`), multiplies the block's dense
/// `cells × present genes` values by them, and concatenates. The backward of the selection
/// scatters gradients only into the rows that were selected: rows of absent genes receive an
/// exact zero gradient.
#[derive(Module, Debug)]
pub struct GeneEmbeddingBag {
    /// Gene embedding table `[n_genes, d_model]` (CellPLM: `embedder.feat_enc.emb`).
    pub emb: Param<Tensor<2>>,
    #[module(skip)]
    transform: ValueTransform,
    block_rows: usize,
}

impl GeneEmbeddingBagConfig {
    /// Initialises the table on `device`.
    pub fn init(&self, device: &Device) -> GeneEmbeddingBag {
        let w = Tensor::<2>::random([self.n_genes, self.d_model], Distribution::Normal(0.0, self.init_std), device);
        GeneEmbeddingBag { emb: Param::from_tensor(w), transform: self.transform, block_rows: self.block_rows.max(1) }
    }
}

impl GeneEmbeddingBag {
    /// Embeds the cells (rows) of `x`.
    ///
    /// # Shapes
    /// - `x`: `n_cells × n_genes` sparse
    /// - output: `[n_cells, d_model]`
    pub fn forward(&self, x: &CsrRows<'_>) -> Result<Tensor<2>, NnError> {
        let [n_genes, d] = self.emb.dims();
        if x.n_cols != n_genes {
            return Err(NnError::Shape(format!("input has {} genes, embedding table has {n_genes}", x.n_cols)));
        }
        let device = self.emb.device();
        let n = x.n_rows();
        if n == 0 {
            return Ok(Tensor::zeros([0, d], &device));
        }
        let table = self.emb.val();
        if !table.is_require_grad() {
            return Ok(self.forward_gather(x, table));
        }
        let mut blocks = Vec::new();
        let mut local = vec![u32::MAX; n_genes];
        let mut start = 0;
        while start < n {
            let end = (start + self.block_rows).min(n);
            let (ptr, idx, val) = x.row_block(start, end);
            let mut present: Vec<u32> = Vec::new();
            for &c in idx {
                if local[c as usize] == u32::MAX {
                    local[c as usize] = present.len() as u32;
                    present.push(c);
                }
            }
            let rows = end - start;
            if present.is_empty() {
                blocks.push(Tensor::zeros([rows, d], &device));
            } else {
                let u = present.len();
                let mut dense = vec![0f32; rows * u];
                for r in 0..rows {
                    for k in ptr[r]..ptr[r + 1] {
                        let v = match self.transform {
                            ValueTransform::Identity => val[k],
                            ValueTransform::Log1p => val[k].ln_1p(),
                        };
                        dense[r * u + local[idx[k] as usize] as usize] += v;
                    }
                }
                let sel = table.clone().select(0, int1(present.iter().map(|&c| c as i64).collect(), &device));
                blocks.push(tensor_from(dense, [rows, u], &device).matmul(sel));
            }
            for &c in &present {
                local[c as usize] = u32::MAX;
            }
            start = end;
        }
        Ok(Tensor::cat(blocks, 0))
    }
}

impl GeneEmbeddingBag {
    /// Inference path (no gradient wanted): the tiled host bag of [`crate::host::GenePanels`]
    /// (`nnz · d` work) on a host copy of the table.
    fn forward_gather(&self, x: &CsrRows<'_>, table: Tensor<2>) -> Tensor<2> {
        let [genes, d] = table.dims();
        let device = table.device();
        let panels = crate::host::GenePanels::new(&to_vec(table), genes, d);
        tensor_from(panels.bag(x, self.transform), [x.n_rows(), d], &device)
    }
}

/// Configuration of [`EmbeddingTable`]: a gene (or token) embedding table, learned or frozen.
#[derive(Config, Debug)]
pub struct EmbeddingTableConfig {
    /// Number of entries.
    pub n_entries: usize,
    /// Embedding dimension.
    pub d_model: usize,
    /// Frozen tables get no gradient and are never updated (default false).
    #[config(default = false)]
    pub frozen: bool,
    /// Standard deviation of the normal initialisation (default 1.0, as `nn.Embedding`).
    #[config(default = 1.0)]
    pub init_std: f64,
}

/// An embedding table looked up by integer ids.
#[derive(Module, Debug)]
pub struct EmbeddingTable {
    /// The table `[n_entries, d_model]`.
    pub weight: Param<Tensor<2>>,
}

impl EmbeddingTableConfig {
    /// Initialises a random table on `device`.
    pub fn init(&self, device: &Device) -> EmbeddingTable {
        let w = Tensor::<2>::random([self.n_entries, self.d_model], Distribution::Normal(0.0, self.init_std), device);
        EmbeddingTable::from_tensor(w, self.frozen)
    }
}

impl EmbeddingTable {
    /// Wraps given weights (e.g. pre-computed gene2vec vectors), frozen or trainable.
    pub fn from_tensor(weight: Tensor<2>, frozen: bool) -> Self {
        EmbeddingTable { weight: Param::from_tensor(weight).set_require_grad(!frozen) }
    }

    /// Looks up ids.
    ///
    /// # Shapes
    /// - `ids`: `[batch, seq]` with values in `0..n_entries`
    /// - output: `[batch, seq, d_model]`
    pub fn forward(&self, ids: Tensor<2, Int>) -> Tensor<3> {
        let [b, l] = ids.dims();
        let d = self.weight.dims()[1];
        self.weight.val().select(0, ids.reshape([b * l])).reshape([b, l, d])
    }
}

/// Configuration of [`BinnedExpressionEmbedding`] (CellLM: values clipped to `max_value`,
/// floored to an integer bin; 8 entries of dimension 512 in the published model).
#[derive(Config, Debug)]
pub struct BinnedExpressionEmbeddingConfig {
    /// Number of bins (rows of the table).
    pub n_bins: usize,
    /// Embedding dimension.
    pub d_model: usize,
    /// Values are clipped to `[0, max_value]` before flooring (default 5, as CellLM).
    #[config(default = 5.0)]
    pub max_value: f64,
}

/// Expression value → bin → learned embedding.
#[derive(Module, Debug)]
pub struct BinnedExpressionEmbedding {
    /// The bin table `[n_bins, d_model]`.
    pub table: EmbeddingTable,
    max_value: f64,
}

impl BinnedExpressionEmbeddingConfig {
    /// Initialises the table on `device`.
    pub fn init(&self, device: &Device) -> BinnedExpressionEmbedding {
        BinnedExpressionEmbedding {
            table: EmbeddingTableConfig::new(self.n_bins, self.d_model).init(device),
            max_value: self.max_value.min((self.n_bins - 1) as f64),
        }
    }
}

impl BinnedExpressionEmbedding {
    /// The bin of each value: `floor(clamp(v, 0, max_value))`.
    ///
    /// # Shapes
    /// `[batch, seq]` → `[batch, seq]` (int)
    pub fn bins(&self, values: Tensor<2>) -> Tensor<2, Int> {
        values.clamp(0.0, self.max_value).floor().int()
    }

    /// Embeds expression values.
    ///
    /// # Shapes
    /// - `values`: `[batch, seq]`
    /// - output: `[batch, seq, d_model]`
    pub fn forward(&self, values: Tensor<2>) -> Tensor<3> {
        self.table.forward(self.bins(values))
    }
}

/// Configuration of [`CategoricalEmbedding`] (CellPLM batch/dataset covariates).
#[derive(Config, Debug)]
pub struct CategoricalEmbeddingConfig {
    /// Number of categories.
    pub n_categories: usize,
    /// Embedding dimension.
    pub d_model: usize,
}

/// Embedding of a categorical covariate; an unknown category (negative code) is embedded as the
/// sum of all rows, as in CellPLM's decoder.
#[derive(Module, Debug)]
pub struct CategoricalEmbedding {
    /// The table `[n_categories, d_model]`.
    pub weight: Param<Tensor<2>>,
}

impl CategoricalEmbeddingConfig {
    /// Initialises the table on `device`.
    pub fn init(&self, device: &Device) -> CategoricalEmbedding {
        let w = Tensor::<2>::random([self.n_categories, self.d_model], Distribution::Normal(0.0, 1.0), device);
        CategoricalEmbedding { weight: Param::from_tensor(w) }
    }
}

impl CategoricalEmbedding {
    /// Embeds category codes (`-1` or any negative value = unknown).
    ///
    /// # Shapes
    /// - `codes`: host slice of length `n`
    /// - output: `[n, d_model]`
    pub fn forward(&self, codes: &[i64]) -> Result<Tensor<2>, NnError> {
        let [k, d] = self.weight.dims();
        if let Some(bad) = codes.iter().find(|&&c| c >= k as i64) {
            return Err(NnError::Shape(format!("category code {bad} out of range for {k} categories")));
        }
        let device = self.weight.device();
        let w = self.weight.val();
        let looked = w.clone().select(0, int1(codes.iter().map(|&c| c.max(0)).collect(), &device));
        if codes.iter().all(|&c| c >= 0) {
            return Ok(looked);
        }
        let n = codes.len();
        let unknown = Tensor::<2, Bool>::from_data(
            TensorData::new(codes.iter().map(|&c| c < 0).collect::<Vec<bool>>(), [n, 1]),
            &device,
        )
        .expand([n, d]);
        let total = w.sum_dim(0).expand([n, d]);
        Ok(looked.mask_where(unknown, total))
    }
}

/// 1-D sinusoidal positional encoding (Vaswani et al. 2017):
/// `PE(p, 2i) = sin(p / 10000^{2i/d})`, `PE(p, 2i+1) = cos(p / 10000^{2i/d})`.
///
/// # Shapes
/// `positions`: `n` → output `[n, d]` (`d` even)
pub fn sinusoidal_pe_1d(positions: &[f32], d: usize, device: &Device) -> Tensor<2> {
    let mut out = vec![0f32; positions.len() * d];
    for (r, &p) in positions.iter().enumerate() {
        for i in 0..d / 2 {
            let freq = 10000f64.powf(2.0 * i as f64 / d as f64);
            let a = p as f64 / freq;
            out[r * d + 2 * i] = a.sin() as f32;
            out[r * d + 2 * i + 1] = a.cos() as f32;
        }
    }
    tensor_from(out, [positions.len(), d], device)
}

/// Normalises spatial coordinates per axis to integers in `[0, 100)` (CellPLM appendix B):
/// `floor(100 · (c − min)/(max − min))`, capped at 99; a constant axis maps to 0.
pub fn normalize_coordinates(coords: &[[f32; 2]]) -> Vec<[f32; 2]> {
    let mut out = vec![[0f32; 2]; coords.len()];
    for axis in 0..2 {
        let (lo, hi) = coords.iter().fold((f32::MAX, f32::MIN), |(l, h), c| (l.min(c[axis]), h.max(c[axis])));
        let span = hi - lo;
        for (o, c) in out.iter_mut().zip(coords) {
            o[axis] = if span > 0.0 { ((c[axis] - lo) / span * 100.0).floor().min(99.0) } else { 0.0 };
        }
    }
    out
}

/// 2-D sinusoidal positional encoding of CellPLM appendix B (Eq. 8), for `d` divisible by 4:
/// `PE(x,y,2i) = sin(x/10000^{4i/d})`, `PE(x,y,2i+1) = cos(x/10000^{4i/d})`,
/// `PE(x,y,2j+d/2) = sin(y/10000^{4j/d})`, `PE(x,y,2j+1+d/2) = cos(y/10000^{4j/d})`,
/// `i, j ∈ [0, d/4)`. Pass coordinates through [`normalize_coordinates`] first to follow the
/// paper.
///
/// # Shapes
/// `coords`: `n` → output `[n, d]`
pub fn sinusoidal_pe_2d(coords: &[[f32; 2]], d: usize, device: &Device) -> Result<Tensor<2>, NnError> {
    if !d.is_multiple_of(4) {
        return Err(NnError::Config(format!("2-D positional encoding needs d divisible by 4, got {d}")));
    }
    let mut out = vec![0f32; coords.len() * d];
    for (r, c) in coords.iter().enumerate() {
        for i in 0..d / 4 {
            let freq = 10000f64.powf(4.0 * i as f64 / d as f64);
            let (ax, ay) = (c[0] as f64 / freq, c[1] as f64 / freq);
            out[r * d + 2 * i] = ax.sin() as f32;
            out[r * d + 2 * i + 1] = ax.cos() as f32;
            out[r * d + 2 * i + d / 2] = ay.sin() as f32;
            out[r * d + 2 * i + 1 + d / 2] = ay.cos() as f32;
        }
    }
    Ok(tensor_from(out, [coords.len(), d], device))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> (Vec<usize>, Vec<u32>, Vec<f32>) {
        // 3 cells × 6 genes; genes 1 and 4 never occur.
        (vec![0, 2, 3, 5], vec![0, 3, 5, 0, 2], vec![1.0, 2.0, 3.0, 4.0, 1.0])
    }

    #[test]
    fn bag_matches_dense_product_across_blocks() {
        let dev = crate::cpu_device();
        let (p, i, v) = example();
        let x = CsrRows::new(6, &p, &i, &v).unwrap();
        for block in [1, 2, 8] {
            let bag = GeneEmbeddingBagConfig::new(6, 4)
                .with_transform(ValueTransform::Identity)
                .with_block_rows(block)
                .init(&dev);
            let out = to_vec(bag.forward(&x).unwrap());
            let w = to_vec(bag.emb.val());
            let mut dense = [[0f32; 6]; 3];
            for r in 0..3 {
                for k in p[r]..p[r + 1] {
                    dense[r][i[k] as usize] = v[k];
                }
            }
            for r in 0..3 {
                for c in 0..4 {
                    let e: f32 = (0..6).map(|g| dense[r][g] * w[g * 4 + c]).sum();
                    assert!((out[r * 4 + c] - e).abs() < 1e-5);
                }
            }
        }
    }

    #[test]
    fn inference_gather_equals_the_differentiable_path() {
        let (p, i, v) = example();
        let x = CsrRows::new(6, &p, &i, &v).unwrap();
        let train = crate::train_device();
        let bag = GeneEmbeddingBagConfig::new(6, 5).init(&train);
        let dense = to_vec(bag.forward(&x).unwrap());
        let inference = bag.valid();
        let gathered = to_vec(inference.forward(&x).unwrap());
        assert_eq!(dense.len(), gathered.len());
        for (a, b) in dense.iter().zip(&gathered) {
            assert!((a - b).abs() < 1e-5, "{a} vs {b}");
        }
    }

    #[test]
    fn bag_gradient_is_zero_on_absent_genes() {
        let dev = crate::train_device();
        let (p, i, v) = example();
        let x = CsrRows::new(6, &p, &i, &v).unwrap();
        let bag = GeneEmbeddingBagConfig::new(6, 4).init(&dev);
        let y = bag.forward(&x).unwrap();
        let grads = (y.clone() * y).sum().backward();
        let g = to_vec(bag.emb.val().grad(&grads).unwrap());
        for gene in 0..6 {
            let norm: f32 = g[gene * 4..gene * 4 + 4].iter().map(|a| a.abs()).sum();
            if gene == 1 || gene == 4 {
                assert_eq!(norm, 0.0, "gene {gene}");
            } else {
                assert!(norm > 0.0, "gene {gene}");
            }
        }
    }

    #[test]
    fn csr_validation_rejects_bad_input() {
        assert!(CsrRows::new(3, &[0, 1], &[3], &[1.0]).is_err());
        assert!(CsrRows::new(3, &[0, 2], &[1], &[1.0]).is_err());
        let bag = GeneEmbeddingBagConfig::new(4, 2).init(&crate::cpu_device());
        let x = CsrRows::new(3, &[0, 1], &[1], &[1.0]).unwrap();
        assert!(bag.forward(&x).is_err());
    }

    #[test]
    fn frozen_table_gets_no_gradient_and_binning_floors() {
        let dev = crate::train_device();
        let table = EmbeddingTableConfig::new(5, 3).with_frozen(true).init(&dev);
        let binned = BinnedExpressionEmbeddingConfig::new(8, 3).init(&dev);
        let vals = Tensor::<2>::from_floats([[0.4f32, 1.0, 2.7, 9.0]], &dev);
        let bins = binned.bins(vals.clone()).into_data().convert::<i64>().try_to_vec::<i64>().unwrap();
        assert_eq!(bins, vec![0, 1, 2, 5]);
        let ids = Tensor::<2, Int>::from_data([[0i64, 4, 2]], &dev);
        let y = table.forward(ids).sum() + binned.forward(vals).sum();
        let grads = y.backward();
        assert!(table.weight.val().grad(&grads).is_none());
        assert!(binned.table.weight.val().grad(&grads).is_some());
    }

    #[test]
    fn unknown_category_is_sum_of_rows() {
        let dev = crate::cpu_device();
        let emb = CategoricalEmbeddingConfig::new(3, 2).init(&dev);
        let w = to_vec(emb.weight.val());
        let out = to_vec(emb.forward(&[2, -1]).unwrap());
        assert_eq!(&out[0..2], &w[4..6]);
        assert!((out[2] - (w[0] + w[2] + w[4])).abs() < 1e-6);
        assert!(emb.forward(&[3]).is_err());
    }

    #[test]
    fn sinusoidal_encodings_follow_the_formulas() {
        let dev = crate::cpu_device();
        // 1-D: dot products depend only on the offset (translation invariance).
        let pe = to_vec(sinusoidal_pe_1d(&[0.0, 3.0, 10.0, 13.0], 16, &dev));
        let dot = |a: usize, b: usize| -> f32 { (0..16).map(|c| pe[a * 16 + c] * pe[b * 16 + c]).sum() };
        assert!((dot(0, 1) - dot(2, 3)).abs() < 1e-4);
        // 2-D: the x half depends only on x, the y half only on y; values from Eq. 8.
        let p2 = to_vec(sinusoidal_pe_2d(&[[5.0, 7.0], [5.0, 1.0]], 8, &dev).unwrap());
        assert_eq!(&p2[0..4], &p2[8..12]);
        assert!((p2[0] - 5f32.sin()).abs() < 1e-6);
        assert!((p2[3] - (5.0f64 / 100.0).cos() as f32).abs() < 1e-6); // i=1: 10000^{4/8} = 100
        assert!((p2[4] - 7f32.sin()).abs() < 1e-6);
        assert!(sinusoidal_pe_2d(&[[0.0, 0.0]], 6, &dev).is_err());
        let n = normalize_coordinates(&[[0.0, 5.0], [10.0, 5.0], [5.0, 5.0]]);
        assert_eq!(n, vec![[0.0, 0.0], [99.0, 0.0], [50.0, 0.0]]);
    }
}
