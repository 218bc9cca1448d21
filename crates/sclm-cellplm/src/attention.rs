//! Cell–cell attention of the Flowformer encoder, exported as a sparse graph.
//!
//! Flowformer never forms an `n × n` attention matrix, but its output is still a weighted sum
//! over the cells of the group: per head, before the output projection,
//! `out_i = Σ_j W[i, j] V_j` with the effective weights
//! `W[i, j] = alloc_i · ⟨Q_i incoming_i, K_j⟩ · comp_j`
//! (see `sclm_nn::attention::FlowAttention::cell_weights`). Row `i` holds how much cell `i`
//! (the query) takes from each cell `j` of its group. The weights are positive (`Q` and `K`
//! are sigmoids, `alloc` a sigmoid, `comp` a softmax scaled by the group size) but a row does
//! not sum to one: the sum is the allocation `alloc_i` (how much flow cell `i` receives) times a
//! competition-weighted mean, so rows of different cells are comparable in size.
//!
//! [`top_k_attention`] averages `W` over the heads of one encoder layer and keeps the `k`
//! largest weights of each row, computing the rows in blocks so that memory stays
//! `O(block × n)` rather than `O(heads × n²)`. [`AttentionGraph`] assembles the per-group
//! results into one `n_obs × n_obs` CSR matrix, block diagonal by forward call (cells attend
//! only within their group, or within their piece of a group larger than the forward limit).
use burn::prelude::*;
use burn::tensor::activation::{sigmoid, softmax};
use sclm_data::CsrMatrix;
use sclm_nn::attention::Attention;
use sclm_nn::burn;
use sclm_nn::embedding::CsrRows;

use crate::embed::{for_each_piece, GeneMapping, PieceOptions};
use crate::error::{CellPlmError, Result};
use crate::model::{to_vec, CellPlm};

/// The stabilising epsilon of the Flowformer formula used by CellPLM (published value).
const FLOW_EPS: f32 = 1e-6;

/// Options of the attention export.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct AttentionOptions {
    /// Encoder layer whose attention is exported, from 0 (default `None`: the last layer).
    pub layer: Option<usize>,
    /// Weights kept per query cell (default 30; all of them when the group is smaller).
    pub top_k: usize,
    /// Query cells whose weights are computed at once (default 512): memory of the export is
    /// about `query_block × n × heads` values for a group of `n` cells.
    pub query_block: usize,
}

impl Default for AttentionOptions {
    fn default() -> Self {
        AttentionOptions { layer: None, top_k: 30, query_block: 512 }
    }
}

/// The encoder layer `layer` (`None` = last), checked against the model.
pub fn resolve_layer(model: &CellPlm, layer: Option<usize>) -> Result<usize> {
    let n = model.encoder.len();
    match layer {
        None if n > 0 => Ok(n - 1),
        Some(l) if l < n => Ok(l),
        _ => Err(CellPlmError::Input(format!(
            "encoder layer {} does not exist: the model has {n} (0..{})",
            layer.map_or("last".to_string(), |l| l.to_string()),
            n.saturating_sub(1)
        ))),
    }
}

/// The hidden state entering encoder layer `layer` for one group: the cell embedder followed
/// by layers `0..layer`, as in the model's forward pass.
///
/// # Shapes
/// - `counts`: `n × genes`; `coords`: `n` pairs
/// - output: `[1, n, enc_hid]`
pub fn layer_input(
    model: &CellPlm,
    counts: &CsrRows<'_>,
    coords: Option<&[[f32; 2]]>,
    layer: usize,
) -> Result<Tensor<3>> {
    if counts.n_cols != model.genes().len() {
        return Err(CellPlmError::Input(format!(
            "counts have {} genes, the model vocabulary has {}",
            counts.n_cols,
            model.genes().len()
        )));
    }
    if counts.n_rows() == 0 {
        return Err(CellPlmError::Input("a group has no cells".into()));
    }
    let layer = resolve_layer(model, Some(layer))?;
    let h = model.embedder.forward(counts, coords)?;
    let [n, d] = h.dims();
    let mut x = h.reshape([1, n, d]);
    for l in &model.encoder[..layer] {
        x = l.forward(x, None);
    }
    Ok(x)
}

/// Per-head effective weights `W[h, i, j]` of encoder layer `layer` for one group (the whole
/// `heads × n × n` tensor: for small groups and checks; see [`top_k_attention`] otherwise).
///
/// # Shapes
/// - `counts`: `n × genes` → `[heads, n, n]`
pub fn head_weights(
    model: &CellPlm,
    counts: &CsrRows<'_>,
    coords: Option<&[[f32; 2]]>,
    layer: usize,
) -> Result<Tensor<3>> {
    let x = layer_input(model, counts, coords, layer)?;
    let w = model.encoder[layer].attention_weights(x, None);
    let [_, h, n, m] = w.dims();
    Ok(w.reshape([h, n, m]))
}

/// The effective weights of encoder layer `opts.layer` averaged over heads, `top_k` largest per
/// row, for one group of `n` cells: an `n × n` CSR matrix (row = query cell, column = the cell
/// attended, both local to the group; columns sorted). Ties keep the lower column.
pub fn top_k_attention(
    model: &CellPlm,
    counts: &CsrRows<'_>,
    coords: Option<&[[f32; 2]]>,
    opts: &AttentionOptions,
) -> Result<CsrMatrix> {
    let layer = resolve_layer(model, opts.layer)?;
    let x = layer_input(model, counts, coords, layer)?;
    let enc = &model.encoder[layer];
    let Attention::Flow(f) = &enc.self_attn else {
        return Err(CellPlmError::Config("attention export needs Flowformer encoder layers".into()));
    };
    // CellPLM's encoder layers are pre-norm: the attention sees norm1(x).
    let x = enc.norm1.forward(x);
    let [_, n, d] = x.dims();
    let heads = model.config().enc_head.max(1);
    let dh = d / heads;
    let split = |t: Tensor<3>| t.reshape([1, n, heads, dh]).swap_dims(1, 2);
    let q = sigmoid(split(f.query_projection.forward(x.clone())));
    let k = sigmoid(split(f.key_projection.forward(x)));
    let dot = |a: Tensor<4>, s: Tensor<4>| (a.add_scalar(FLOW_EPS) * s.add_scalar(FLOW_EPS)).sum_dim(3);
    let incoming = dot(q.clone(), k.clone().sum_dim(2)).recip();
    let outgoing = dot(k.clone(), q.clone().sum_dim(2)).recip();
    let conserved_in = dot(q.clone(), (k.clone() * outgoing).sum_dim(2));
    let conserved_out = dot(k.clone(), (q.clone() * incoming.clone()).sum_dim(2)).clamp(-1.0, 1.0);
    let allocation = sigmoid(conserved_in); // [1, h, n, 1]
    let competition = (softmax(conserved_out, 2) * (n as f32)).swap_dims(2, 3); // [1, h, 1, n]
    let q_in = q * incoming;
    let kt = k.swap_dims(2, 3); // [1, h, dh, n]
    let top = opts.top_k.max(1).min(n);
    let block = opts.query_block.max(1);
    let mut indptr = Vec::with_capacity(n + 1);
    indptr.push(0);
    let (mut indices, mut data) = (Vec::with_capacity(n * top), Vec::with_capacity(n * top));
    let mut order: Vec<u32> = Vec::with_capacity(n);
    let mut a = 0;
    while a < n {
        let b = (a + block).min(n);
        let w = q_in.clone().slice([0..1, 0..heads, a..b, 0..dh]).matmul(kt.clone())
            * allocation.clone().slice([0..1, 0..heads, a..b, 0..1])
            * competition.clone();
        let w = to_vec(w.mean_dim(1)); // [1, 1, b - a, n]
        for r in 0..b - a {
            let row = &w[r * n..(r + 1) * n];
            order.clear();
            order.extend(0..n as u32);
            let cmp = |x: &u32, y: &u32| row[*y as usize].total_cmp(&row[*x as usize]).then(x.cmp(y));
            if top < n {
                order.select_nth_unstable_by(top - 1, cmp);
                order.truncate(top);
            }
            order.sort_unstable();
            indices.extend_from_slice(&order);
            data.extend(order.iter().map(|&c| row[c as usize]));
            indptr.push(indices.len());
        }
        a = b;
    }
    Ok(CsrMatrix::new(n, n, indptr, indices, data)?)
}

/// Assembles per-group attention (local `n_g × n_g` matrices) into one `n_obs × n_obs` CSR
/// matrix, block diagonal by group: row `i` = cell `i` attending, columns = cells attended.
#[derive(Debug, Clone)]
pub struct AttentionGraph {
    rows: Vec<Vec<(u32, f32)>>,
}

impl AttentionGraph {
    /// An empty graph over `n_obs` cells.
    pub fn new(n_obs: usize) -> Self {
        AttentionGraph { rows: vec![Vec::new(); n_obs] }
    }

    /// Adds the attention of one group: `cells[i]` is the dataset row of local cell `i`.
    pub fn add_group(&mut self, cells: &[usize], local: &CsrMatrix) -> Result<()> {
        if local.nrows != cells.len() || local.ncols != cells.len() {
            return Err(CellPlmError::Input(format!(
                "attention of a group of {} cells has shape {} × {}",
                cells.len(),
                local.nrows,
                local.ncols
            )));
        }
        if let Some(&c) = cells.iter().find(|&&c| c >= self.rows.len()) {
            return Err(CellPlmError::Input(format!("cell {c} is outside the {} cells of the graph", self.rows.len())));
        }
        for (i, &r) in cells.iter().enumerate() {
            let (idx, val) = local.row(i);
            let row = &mut self.rows[r];
            row.clear();
            row.extend(idx.iter().zip(val).map(|(&j, &v)| (cells[j as usize] as u32, v)));
            row.sort_unstable_by_key(|e| e.0);
        }
        Ok(())
    }

    /// The `n_obs × n_obs` CSR matrix.
    pub fn finish(self) -> CsrMatrix {
        let n = self.rows.len();
        let nnz = self.rows.iter().map(|r| r.len()).sum();
        let (mut indptr, mut indices, mut data) =
            (Vec::with_capacity(n + 1), Vec::with_capacity(nnz), Vec::with_capacity(nnz));
        indptr.push(0);
        for r in self.rows {
            indices.extend(r.iter().map(|e| e.0));
            data.extend(r.iter().map(|e| e.1));
            indptr.push(indices.len());
        }
        CsrMatrix { nrows: n, ncols: n, indptr, indices, data }
    }
}

/// The attention graph of a whole dataset held in memory (rows of `x` = cells, columns = the
/// dataset genes of `mapping`), with the forward calls of [`crate::embed::embed_chunk`]:
/// `n × n` CSR, block diagonal by forward call, `top_k` weights per row (see the module
/// documentation for what the values mean). `progress` receives the number of cells done.
#[allow(clippy::too_many_arguments)]
pub fn attention_graph(
    model: &CellPlm,
    x: &CsrMatrix,
    groups: Option<&[String]>,
    coords: Option<&[[f32; 2]]>,
    mapping: &GeneMapping,
    opts: &PieceOptions,
    attn: &AttentionOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<CsrMatrix> {
    resolve_layer(model, attn.layer)?;
    let mut graph = AttentionGraph::new(x.nrows);
    let mut done = 0;
    for_each_piece(model.genes().len(), x, groups, coords, mapping, opts, &mut |part, counts, pc| {
        let local = top_k_attention(model, counts, pc, attn)?;
        graph.add_group(part, &local)?;
        done += part.len();
        progress(done);
        Ok(())
    })?;
    Ok(graph.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::tiny_model;
    use burn::tensor::Distribution;

    fn counts(n: usize) -> CsrMatrix {
        let mut d = sclm_data::Dense::zeros(n, 12);
        for r in 0..n {
            for c in 0..12 {
                if (r * 5 + c * 3) % 4 != 0 {
                    d.data[r * 12 + c] = ((r * 7 + 2 * c) % 9) as f32;
                }
            }
        }
        CsrMatrix::from_dense(&d)
    }

    fn rows(x: &CsrMatrix) -> CsrRows<'_> {
        CsrRows::new(x.ncols, &x.indptr, &x.indices, &x.data).unwrap()
    }

    fn max_abs(a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len());
        a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
    }

    #[test]
    fn layer_input_matches_the_forward_pass() {
        let model = tiny_model(3);
        let x = counts(9);
        let out = model
            .forward(&crate::GroupInput { counts: rows(&x), coords: None, covariates: Default::default() }, false)
            .unwrap();
        for layer in 0..3 {
            let h = to_vec(layer_input(&model, &rows(&x), None, layer).unwrap());
            let name =
                if layer == 0 { "embedder.out".to_string() } else { format!("encoder.layers.{}.out", layer - 1) };
            let want = to_vec(out.activation(&name).unwrap().clone());
            assert!(max_abs(&h, &want) < 1e-5, "layer {layer}");
        }
        assert!(resolve_layer(&model, Some(3)).is_err());
        assert_eq!(resolve_layer(&model, None).unwrap(), 2);
    }

    #[test]
    fn weights_reproduce_the_attention_output_and_are_positive() {
        // W @ V, merged over heads and projected, is the attention block's output.
        let model = tiny_model(2);
        let dev = sclm_nn::cpu_device();
        let x = Tensor::<3>::random([1, 11, 16], Distribution::Normal(0.0, 1.0), &dev);
        let enc = &model.encoder[1];
        let Attention::Flow(f) = &enc.self_attn else { panic!("CellPLM uses Flowformer") };
        let xn = enc.norm1.forward(x.clone());
        let w = enc.attention_weights(x, None); // [1, 4, 11, 11]
        let v = f.value_projection.forward(xn.clone()).reshape([1, 11, 4, 4]).swap_dims(1, 2);
        let per_head = w.clone().matmul(v).swap_dims(1, 2).reshape([1, 11, 16]);
        let via_w = to_vec(f.out_projection.forward(per_head));
        let direct = to_vec(f.forward(xn, None));
        assert!(max_abs(&via_w, &direct) < 1e-4, "{}", max_abs(&via_w, &direct));
        assert!(to_vec(w).iter().all(|&v| v > 0.0 && v.is_finite()));
    }

    #[test]
    fn top_k_keeps_the_largest_head_averaged_weights() {
        let model = tiny_model(2);
        let x = counts(13);
        for layer in [0, 1] {
            let full = head_weights(&model, &rows(&x), None, layer).unwrap(); // [4, 13, 13]
            let mean = to_vec(full.mean_dim(0)); // [1, 13, 13]
            for (k, block) in [(5, 4), (13, 512), (40, 3)] {
                let opts = AttentionOptions { layer: Some(layer), top_k: k, query_block: block };
                let t = top_k_attention(&model, &rows(&x), None, &opts).unwrap();
                let kk = k.min(13);
                for i in 0..13 {
                    let (idx, val) = t.row(i);
                    assert_eq!(idx.len(), kk);
                    let row = &mean[i * 13..(i + 1) * 13];
                    for (&j, &v) in idx.iter().zip(val) {
                        assert!((v - row[j as usize]).abs() < 1e-5 * row[j as usize].abs().max(1.0));
                    }
                    // Every weight left out is no larger than the smallest kept.
                    let kept_min = val.iter().cloned().fold(f32::INFINITY, f32::min);
                    for j in 0..13u32 {
                        if !idx.contains(&j) {
                            assert!(row[j as usize] <= kept_min + 1e-6);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn graph_is_block_diagonal_by_group() {
        let model = tiny_model(1);
        let x = counts(20);
        let mapping = GeneMapping::new((0..12).map(Some).collect(), 12).unwrap();
        let groups: Vec<String> = (0..20).map(|r| ["a", "b", "c"][r % 3].to_string()).collect();
        let opts = PieceOptions::default();
        let attn = AttentionOptions { top_k: 4, ..Default::default() };
        let mut last = 0;
        let g = attention_graph(&model, &x, Some(&groups), None, &mapping, &opts, &attn, &mut |d| last = d).unwrap();
        assert_eq!(last, 20);
        assert_eq!((g.nrows, g.ncols, g.nnz()), (20, 20, 80));
        for i in 0..20 {
            let (idx, val) = g.row(i);
            assert_eq!(idx.len(), 4);
            assert!(idx.iter().all(|&j| groups[j as usize] == groups[i]), "row {i}: {idx:?}");
            assert!(val.iter().all(|&v| v > 0.0));
        }
        // The same rows as the group computed on its own.
        let a_rows: Vec<usize> = (0..20).filter(|r| r % 3 == 0).collect();
        let sub = x.select_rows(&a_rows);
        let local = top_k_attention(&model, &rows(&sub), None, &attn).unwrap();
        for (li, &r) in a_rows.iter().enumerate() {
            let (gi, gv) = g.row(r);
            let (lidx, lv) = local.row(li);
            assert_eq!(gi, lidx.iter().map(|&j| a_rows[j as usize] as u32).collect::<Vec<_>>());
            assert_eq!(gv, lv);
        }
        let bad = AttentionOptions { layer: Some(5), ..Default::default() };
        assert!(attention_graph(&model, &x, None, None, &mapping, &opts, &bad, &mut |_| {})
            .unwrap_err()
            .to_string()
            .contains("layer 5"));
    }
}
