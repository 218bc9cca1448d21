//! Host inference path: the forward pass of the blocks CellPLM's zero-shot embedding needs
//! (gene-embedding bag, Linear, LayerNorm/GroupNorm, Flowformer encoder layer) on plain
//! row-major `f32` buffers.
//!
//! Why a second path: burn's CPU backend runs every element-wise operation as its own pass
//! over freshly allocated memory. In a Flowformer layer over 10,000 cells × 1,024 features
//! (CellPLM 85M) those passes cost as much as the layer's matrix products. Here the element-wise
//! steps are fused into one pass per stage, the loops are compiled for AVX2/FMA with run-time
//! dispatch ([`simd!`]), and the matrix products call the `gemm` crate (the same GEMM burn's
//! flex backend uses) on views of the buffers without copies.
//!
//! Scope: inference only (no dropout, no gradients, no padding mask). A snapshot
//! ([`HostEncoderLayer::from_layer`], [`HostLinear::from_linear`], ...) copies a module's
//! weights once; its forward then equals the burn module's within float rounding (tested).
use burn::nn::Linear;
use rayon::prelude::*;

use crate::attention::Attention;
use crate::embedding::{CsrRows, ValueTransform};
use crate::encoder::{ActivationKind, EncoderLayer, Norm};
use crate::util::to_vec;

/// Defines a function whose body is compiled twice, for AVX2+FMA and portably, and picks the
/// AVX2 version at run time when the CPU has it. Bodies are plain loops that LLVM vectorises;
/// helper functions they call must be `#[inline(always)]` to be compiled for AVX2 too.
macro_rules! simd {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn portable($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                #[allow(clippy::too_many_arguments)]
                fn avx2($($arg: $ty),*) $(-> $ret)? { portable($($arg),*) }
                if has_avx2() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked at run time).
                    return unsafe { avx2($($arg),*) };
                }
            }
            portable($($arg),*)
        }
    };
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"))
}

// ---------------------------------------------------------------------------------------------
// Scalar building blocks (inlined into the vectorised loops)
// ---------------------------------------------------------------------------------------------

/// `e^x` for f32 without a libm call, so loops over it vectorise: `x = n ln 2 + r` with
/// `|r| ≤ ln 2 / 2` (two-part ln 2), a degree-7 Taylor polynomial for `e^r` (relative error
/// below 1e-7 on that range) and `2^n` built from the exponent bits. Inputs are clamped to
/// [−87, 88], so results stay finite and normal.
#[inline(always)]
pub fn exp_f32(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5·2^23 rounds to the nearest integer for |t| < 2^22.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.0, 88.0);
    let n = (x * LOG2_E + ROUND) - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    let scale = f32::from_bits(((n as i32 + 127) as u32) << 23);
    p * scale
}

/// Logistic sigmoid `1 / (1 + e^{−x})`.
#[inline(always)]
pub fn sigmoid_f32(x: f32) -> f32 {
    1.0 / (1.0 + exp_f32(-x))
}

/// `erf(x)` for f32 as an odd rational function of x on [−4, 4] (±1 outside, where f32 erf
/// rounds to ±1): numerator degree 13, denominator degree 8 in x; absolute error below 1e-6
/// against f64 erf (tested). Coefficients: the single-precision minimax fit used by
/// vectorised math libraries (Eigen, XLA).
#[inline(always)]
pub fn erf_f32(x: f32) -> f32 {
    let x = x.clamp(-4.0, 4.0);
    let x2 = x * x;
    let mut p = -2.726_142_3e-10_f32;
    p = p * x2 + 2.770_681_4e-8;
    p = p * x2 + -2.101_024e-6;
    p = p * x2 + -5.692_506_4e-5;
    p = p * x2 + -7.349_906_3e-4;
    p = p * x2 + -2.954_600_1e-3;
    p = p * x2 + -1.609_603_3e-2;
    p *= x;
    let mut q = -1.456_607_2e-5_f32;
    q = q * x2 + -2.133_740_6e-4;
    q = q * x2 + -1.682_827e-3;
    q = q * x2 + -7.373_329_2e-3;
    q = q * x2 + -1.426_474e-2;
    p / q
}

/// Exact (erf) GELU: `x/2 · (1 + erf(x/√2))`.
#[inline(always)]
pub fn gelu_f32(x: f32) -> f32 {
    0.5 * x * (1.0 + erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Sum of a slice with 16 independent accumulators (vectorisable; summation order differs
/// from a sequential sum by rounding only).
#[inline(always)]
fn sum_lanes(x: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut chunks = x.chunks_exact(16);
    for c in &mut chunks {
        for l in 0..16 {
            acc[l] += c[l];
        }
    }
    let mut s: f32 = chunks.remainder().iter().sum();
    for a in acc {
        s += a;
    }
    s
}

/// `Σ (a_c + eps) · b_c` with 16 accumulators.
#[inline(always)]
fn dot_shift(a: &[f32], eps: f32, b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for l in 0..16 {
            acc[l] += (x[l] + eps) * y[l];
        }
    }
    let mut s: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| (x + eps) * y).sum();
    for v in acc {
        s += v;
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Vectorised kernels
// ---------------------------------------------------------------------------------------------

simd! {
    /// `y += a · x`.
    pub fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
        for (o, &e) in y.iter_mut().zip(x) {
            *o += a * e;
        }
    }
}

simd! {
    /// `y += b` element-wise.
    fn add_assign(y: &mut [f32], b: &[f32]) {
        for (o, &e) in y.iter_mut().zip(b) {
            *o += e;
        }
    }
}

simd! {
    /// `y = sigmoid(y + b)`.
    fn bias_sigmoid(y: &mut [f32], b: &[f32]) {
        for (o, &e) in y.iter_mut().zip(b) {
            *o = sigmoid_f32(*o + e);
        }
    }
}

simd! {
    /// `y = gelu(y + b)`.
    fn bias_gelu(y: &mut [f32], b: &[f32]) {
        for (o, &e) in y.iter_mut().zip(b) {
            *o = gelu_f32(*o + e);
        }
    }
}

simd! {
    /// `y = relu(y + b)`.
    fn bias_relu(y: &mut [f32], b: &[f32]) {
        for (o, &e) in y.iter_mut().zip(b) {
            *o = (*o + e).max(0.0);
        }
    }
}

simd! {
    /// `y *= s`.
    fn scale(y: &mut [f32], s: f32) {
        for o in y.iter_mut() {
            *o *= s;
        }
    }
}

simd! {
    /// Normalises `x` (one group of one row) to zero mean and unit variance (biased, as
    /// PyTorch), then applies `gamma`, `beta`, writing to `out`.
    fn norm_group(out: &mut [f32], x: &[f32], gamma: &[f32], beta: &[f32], eps: f32) {
        let n = x.len() as f32;
        let mean = sum_lanes(x) / n;
        let mut acc = [0f32; 16];
        let mut chunks = x.chunks_exact(16);
        for c in &mut chunks {
            for l in 0..16 {
                let t = c[l] - mean;
                acc[l] += t * t;
            }
        }
        let mut var: f32 = chunks.remainder().iter().map(|v| (v - mean) * (v - mean)).sum();
        for a in acc {
            var += a;
        }
        let inv = 1.0 / (var / n + eps).sqrt();
        for (((o, &v), &g), &b) in out.iter_mut().zip(x).zip(gamma).zip(beta) {
            *o = (v - mean) * inv * g + b;
        }
    }
}

simd! {
    /// `acc += x · w` (per-head weights `w[c / dh]`).
    fn axpy_heads(acc: &mut [f32], x: &[f32], w: &[f32], dh: usize) {
        for ((a, xs), &s) in acc.chunks_mut(dh).zip(x.chunks(dh)).zip(w) {
            for (o, &v) in a.iter_mut().zip(xs) {
                *o += s * v;
            }
        }
    }
}

simd! {
    /// `out[h] = Σ_c (x_hc + eps) · s_hc` per head of width `dh`.
    fn dot_heads(out: &mut [f32], x: &[f32], s: &[f32], eps: f32, dh: usize) {
        for ((o, xs), ss) in out.iter_mut().zip(x.chunks(dh)).zip(s.chunks(dh)) {
            *o = dot_shift(xs, eps, ss);
        }
    }
}

/// Rows per parallel task of the element-wise passes.
const ROW_CHUNK: usize = 64;

/// Applies `f` to every row (`width` values) of a row-major buffer, rows in parallel.
fn for_rows(buf: &mut [f32], width: usize, f: impl Fn(&mut [f32]) + Sync) {
    buf.par_chunks_mut(width * ROW_CHUNK).for_each(|c| c.chunks_mut(width).for_each(&f));
}

// ---------------------------------------------------------------------------------------------
// Matrix product
// ---------------------------------------------------------------------------------------------

/// A read-only strided matrix view: element `(i, j)` at `ptr[i·rs + j·cs]`.
#[derive(Clone, Copy)]
struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    fn rows(data: &'a [f32], rows: usize, cols: usize, rs: usize) -> Self {
        View { data, rows, cols, rs, cs: 1 }
    }

    fn check(&self) {
        if self.rows > 0 && self.cols > 0 {
            let last = (self.rows - 1) * self.rs + (self.cols - 1) * self.cs;
            assert!(last < self.data.len(), "matrix view out of bounds");
        }
    }
}

/// `dst (m×n, row stride dst_rs) = [dst +] a · b`.
///
/// # Panics
/// If the shapes disagree or a view runs past its slice (programming errors: the callers
/// size every buffer).
fn matmul(dst: &mut [f32], dst_rs: usize, a: View<'_>, b: View<'_>, accumulate: bool, parallel: bool) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions differ");
    a.check();
    b.check();
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * dst_rs + n <= dst.len(), "destination too small");
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(0.0);
            }
        }
        return;
    }
    let par = if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    // SAFETY: every view was bounds-checked above; dst is exclusively borrowed and does not
    // alias a or b (distinct slices).
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            par,
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Snapshots of modules
// ---------------------------------------------------------------------------------------------

/// A Linear layer on the host: weight `[d_in, d_out]` row-major (burn's layout), bias.
#[derive(Debug, Clone)]
pub struct HostLinear {
    /// Input features.
    pub d_in: usize,
    /// Output features.
    pub d_out: usize,
    /// `[d_in, d_out]`, row-major.
    pub weight: Vec<f32>,
    /// `[d_out]` (zeros when the module has none).
    pub bias: Vec<f32>,
}

impl HostLinear {
    /// Copies the weights of `linear`.
    pub fn from_linear(linear: &Linear) -> Self {
        let [d_in, d_out] = linear.weight.dims();
        let weight = to_vec(linear.weight.val());
        let bias = linear.bias.as_ref().map(|b| to_vec(b.val())).unwrap_or_else(|| vec![0.0; d_out]);
        HostLinear { d_in, d_out, weight, bias }
    }

    /// Concatenates layers with the same input along the output dimension.
    fn concat(parts: &[HostLinear]) -> Self {
        let d_in = parts[0].d_in;
        let d_out: usize = parts.iter().map(|p| p.d_out).sum();
        let mut weight = Vec::with_capacity(d_in * d_out);
        for r in 0..d_in {
            for p in parts {
                weight.extend_from_slice(&p.weight[r * p.d_out..(r + 1) * p.d_out]);
            }
        }
        let bias = parts.iter().flat_map(|p| p.bias.iter().copied()).collect();
        HostLinear { d_in, d_out, weight, bias }
    }

    /// `x · W` without the bias (the caller fuses it into the next element-wise pass).
    fn product(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut out = vec![0f32; n * self.d_out];
        self.product_into(&mut out, x, n);
        out
    }

    /// [`HostLinear::product`] into `out` (`n × d_out`; its contents are overwritten, not read).
    fn product_into(&self, out: &mut [f32], x: &[f32], n: usize) {
        matmul(out, self.d_out, View::rows(x, n, self.d_in, self.d_in), self.weight_view(), false, true);
    }

    fn weight_view(&self) -> View<'_> {
        View::rows(&self.weight, self.d_in, self.d_out, self.d_out)
    }

    /// `x · W + b`.
    ///
    /// # Shapes
    /// - `x`: `n × d_in` row-major → `n × d_out`
    pub fn forward(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut out = self.product(x, n);
        for_rows(&mut out, self.d_out, |row| add_assign(row, &self.bias));
        out
    }

    /// `x · W + b` followed by ReLU.
    ///
    /// # Shapes
    /// - `x`: `n × d_in` row-major → `n × d_out`
    pub fn forward_relu(&self, x: &[f32], n: usize) -> Vec<f32> {
        let mut out = self.product(x, n);
        for_rows(&mut out, self.d_out, |row| bias_relu(row, &self.bias));
        out
    }

    /// `y += x · W + b` (a residual branch).
    ///
    /// # Shapes
    /// - `x`: `n × d_in`, `y`: `n × d_out`, row-major
    fn add_forward(&self, y: &mut [f32], x: &[f32], n: usize) {
        for_rows(y, self.d_out, |row| add_assign(row, &self.bias));
        matmul(y, self.d_out, View::rows(x, n, self.d_in, self.d_in), self.weight_view(), true, true);
    }
}

/// LayerNorm (one group) or GroupNorm over the features of each row, with affine parameters.
#[derive(Debug, Clone)]
pub struct HostNorm {
    /// Scale `[d]`.
    pub gamma: Vec<f32>,
    /// Shift `[d]`.
    pub beta: Vec<f32>,
    /// Number of groups (1 = LayerNorm).
    pub groups: usize,
    /// Epsilon added to the variance.
    pub eps: f32,
}

impl HostNorm {
    /// Copies a LayerNorm with epsilon `eps` (burn keeps LayerNorm's epsilon private, so the
    /// caller passes the value it was built with).
    pub fn from_layer_norm(norm: &burn::nn::LayerNorm, eps: f64) -> Self {
        let gamma = to_vec(norm.gamma.val());
        let beta = norm.beta.as_ref().map(|b| to_vec(b.val())).unwrap_or_else(|| vec![0.0; gamma.len()]);
        HostNorm { gamma, beta, groups: 1, eps: eps as f32 }
    }

    /// Copies a [`Norm`]; `eps` is used for LayerNorm (GroupNorm carries its own).
    pub fn from_norm(norm: &Norm, eps: f64) -> Self {
        match norm {
            Norm::Layer(l) => Self::from_layer_norm(l, eps),
            Norm::Group(g) => {
                let d = g.num_channels;
                let gamma = g.gamma.as_ref().map(|p| to_vec(p.val())).unwrap_or_else(|| vec![1.0; d]);
                let beta = g.beta.as_ref().map(|p| to_vec(p.val())).unwrap_or_else(|| vec![0.0; d]);
                HostNorm { gamma, beta, groups: g.num_groups, eps: g.epsilon as f32 }
            }
        }
    }

    /// Normalises each row of `x` into `out`.
    ///
    /// # Shapes
    /// - `x`, `out`: `n × d` row-major
    pub fn forward_into(&self, out: &mut [f32], x: &[f32]) {
        let d = self.gamma.len();
        let gs = d / self.groups;
        out.par_chunks_mut(d * ROW_CHUNK).zip(x.par_chunks(d * ROW_CHUNK)).for_each(|(o, x)| {
            for (orow, xrow) in o.chunks_mut(d).zip(x.chunks(d)) {
                for g in 0..self.groups {
                    let r = g * gs..(g + 1) * gs;
                    norm_group(&mut orow[r.clone()], &xrow[r.clone()], &self.gamma[r.clone()], &self.beta[r], self.eps);
                }
            }
        });
    }

    /// Normalises each row.
    ///
    /// # Shapes
    /// - `x`: `n × d` row-major → same
    pub fn forward(&self, x: &[f32]) -> Vec<f32> {
        let mut out = vec![0f32; x.len()];
        self.forward_into(&mut out, x);
        out
    }
}

/// Intermediate buffers of [`HostEncoderLayer::forward_with`]: they grow to the largest
/// sequence seen and are overwritten, never read, by each call.
#[derive(Debug, Default)]
pub struct LayerScratch {
    xn: Vec<f32>,
    qkv: Vec<f32>,
    h: Vec<f32>,
}

/// The first `len` elements of `buf`, growing it when shorter.
fn sized(buf: &mut Vec<f32>, len: usize) -> &mut [f32] {
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    &mut buf[..len]
}

/// A pre-norm Flowformer encoder layer on the host (CellPLM's `FlowformerLayer`; see
/// [`crate::attention::FlowAttention`] for the flow formula). Q, K and V share one GEMM.
#[derive(Debug, Clone)]
pub struct HostEncoderLayer {
    /// `[Wq | Wk | Wv]`, `d → 3d`.
    pub qkv: HostLinear,
    /// Output projection.
    pub out: HostLinear,
    /// Feed-forward input projection.
    pub ff_in: HostLinear,
    /// Feed-forward output projection.
    pub ff_out: HostLinear,
    /// Norm before attention.
    pub norm1: HostNorm,
    /// Norm before the feed-forward block.
    pub norm2: HostNorm,
    /// Heads.
    pub n_heads: usize,
    /// Flow epsilon.
    pub eps: f32,
    /// Feed-forward activation.
    pub activation: ActivationKind,
}

impl HostEncoderLayer {
    /// Copies a pre-norm Flowformer layer; `None` for other attention kinds or post-norm layers
    /// (they keep the burn path).
    pub fn from_layer(layer: &EncoderLayer) -> Option<Self> {
        let Attention::Flow(att) = &layer.self_attn else { return None };
        if !layer.is_norm_first() {
            return None;
        }
        let eps = layer.norm_eps();
        let qkv = HostLinear::concat(&[
            HostLinear::from_linear(&att.query_projection),
            HostLinear::from_linear(&att.key_projection),
            HostLinear::from_linear(&att.value_projection),
        ]);
        Some(HostEncoderLayer {
            qkv,
            out: HostLinear::from_linear(&att.out_projection),
            ff_in: HostLinear::from_linear(&layer.ff_in),
            ff_out: HostLinear::from_linear(&layer.ff_out),
            norm1: HostNorm::from_norm(&layer.norm1, eps),
            norm2: HostNorm::from_norm(&layer.norm2, eps),
            n_heads: att.n_heads(),
            eps: att.eps() as f32,
            activation: layer.activation(),
        })
    }

    /// Forward pass over one sequence (no padding), updating `x` in place.
    ///
    /// # Shapes
    /// - `x`: `n × d` row-major
    pub fn forward(&self, x: &mut [f32], n: usize) {
        self.forward_with(x, n, &mut LayerScratch::default());
    }

    /// [`HostEncoderLayer::forward`] with its intermediate buffers taken from `scratch`, so a
    /// stack of layers (and the groups after it) reuse memory that is already paged in.
    ///
    /// # Shapes
    /// - `x`: `n × d` row-major
    pub fn forward_with(&self, x: &mut [f32], n: usize, scratch: &mut LayerScratch) {
        let d = self.out.d_out;
        if n == 0 {
            return;
        }
        let LayerScratch { xn, qkv, h } = scratch;
        let xn = sized(xn, n * d);
        self.norm1.forward_into(xn, x);
        let qkv = sized(qkv, n * self.qkv.d_out);
        self.qkv.product_into(qkv, xn, n);
        let attn = xn; // reused as the attention output buffer
        self.flow(qkv, n, attn);
        self.out.add_forward(x, attn, n);
        self.norm2.forward_into(attn, x);
        let h = sized(h, n * self.ff_in.d_out);
        self.ff_in.product_into(h, attn, n);
        for_rows(h, self.ff_in.d_out, |row| match self.activation {
            ActivationKind::Gelu => bias_gelu(row, &self.ff_in.bias),
            ActivationKind::Relu => bias_relu(row, &self.ff_in.bias),
        });
        debug_assert_eq!(self.ff_out.d_out, d);
        self.ff_out.add_forward(x, h, n);
    }

    /// Flow attention on `qkv` (`n × 3d`, raw projections without bias) into `out` (`n × d`,
    /// before the output projection).
    fn flow(&self, qkv: &mut [f32], n: usize, out: &mut [f32]) {
        let d = self.out.d_in;
        let s = 3 * d;
        let h = self.n_heads;
        let dh = d / h;
        let eps = self.eps;
        let bias = &self.qkv.bias;
        // Q = σ(·), K = σ(·), V = ·, biases added; column sums of Q and K.
        let (sum_q, sum_k) = qkv
            .par_chunks_mut(s * ROW_CHUNK)
            .map(|c| {
                let mut sq = vec![0f32; d];
                let mut sk = vec![0f32; d];
                for row in c.chunks_mut(s) {
                    let (q, rest) = row.split_at_mut(d);
                    let (k, v) = rest.split_at_mut(d);
                    bias_sigmoid(q, &bias[..d]);
                    bias_sigmoid(k, &bias[d..2 * d]);
                    add_assign(v, &bias[2 * d..]);
                    add_assign(&mut sq, q);
                    add_assign(&mut sk, k);
                }
                (sq, sk)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .fold((vec![0f32; d], vec![0f32; d]), add_pair);
        let shifted = |v: Vec<f32>| -> Vec<f32> { v.into_iter().map(|x| x + eps).collect() };
        let (sum_q, sum_k) = (shifted(sum_q), shifted(sum_k));
        // incoming_i = 1/⟨Q_i+ε, ΣK+ε⟩, outgoing_j = 1/⟨K_j+ε, ΣQ+ε⟩, per head: [n, h].
        let mut incoming = vec![0f32; n * h];
        let mut outgoing = vec![0f32; n * h];
        // Σ_j K_j outgoing_j and Σ_i Q_i incoming_i.
        let (q_in_sum, k_out_sum) = qkv
            .par_chunks(s * ROW_CHUNK)
            .zip(incoming.par_chunks_mut(h * ROW_CHUNK))
            .zip(outgoing.par_chunks_mut(h * ROW_CHUNK))
            .map(|((c, inc), outg)| {
                let mut qi = vec![0f32; d];
                let mut ko = vec![0f32; d];
                for ((row, i), o) in c.chunks(s).zip(inc.chunks_mut(h)).zip(outg.chunks_mut(h)) {
                    let (q, k) = (&row[..d], &row[d..2 * d]);
                    dot_heads(i, q, &sum_k, eps, dh);
                    dot_heads(o, k, &sum_q, eps, dh);
                    for v in i.iter_mut().chain(o.iter_mut()) {
                        *v = 1.0 / *v;
                    }
                    axpy_heads(&mut qi, q, i, dh);
                    axpy_heads(&mut ko, k, o, dh);
                }
                (qi, ko)
            })
            .collect::<Vec<_>>()
            .into_iter()
            .fold((vec![0f32; d], vec![0f32; d]), add_pair);
        let (q_in_sum, k_out_sum) = (shifted(q_in_sum), shifted(k_out_sum));
        // allocation_i = σ(⟨Q_i+ε, ΣK·out+ε⟩); conserved outgoing flow clamped to [−1, 1].
        let mut alloc = vec![0f32; n * h];
        let mut cout = vec![0f32; n * h];
        qkv.par_chunks(s * ROW_CHUNK)
            .zip(alloc.par_chunks_mut(h * ROW_CHUNK))
            .zip(cout.par_chunks_mut(h * ROW_CHUNK))
            .for_each(|((c, a), co)| {
                for ((row, a), co) in c.chunks(s).zip(a.chunks_mut(h)).zip(co.chunks_mut(h)) {
                    dot_heads(a, &row[..d], &k_out_sum, eps, dh);
                    dot_heads(co, &row[d..2 * d], &q_in_sum, eps, dh);
                    for v in a.iter_mut() {
                        *v = sigmoid_f32(*v);
                    }
                    for v in co.iter_mut() {
                        *v = v.clamp(-1.0, 1.0);
                    }
                }
            });
        // competition_j = softmax_j(cout) · n, per head.
        let mut max = vec![f32::NEG_INFINITY; h];
        for row in cout.chunks(h) {
            for (m, &v) in max.iter_mut().zip(row) {
                *m = m.max(v);
            }
        }
        let mut total = vec![0f64; h];
        for row in cout.chunks_mut(h) {
            for ((v, m), t) in row.iter_mut().zip(&max).zip(total.iter_mut()) {
                *v = exp_f32(*v - m);
                *t += *v as f64;
            }
        }
        let factor: Vec<f32> = total.iter().map(|t| (n as f64 / t) as f32).collect();
        // V_j ← V_j comp_j; Q_i ← Q_i incoming_i allocation_i.
        qkv.par_chunks_mut(s * ROW_CHUNK)
            .zip(cout.par_chunks(h * ROW_CHUNK))
            .zip(incoming.par_chunks(h * ROW_CHUNK).zip(alloc.par_chunks(h * ROW_CHUNK)))
            .for_each(|((c, comp), (inc, al))| {
                for (((row, comp), inc), al) in c.chunks_mut(s).zip(comp.chunks(h)).zip(inc.chunks(h)).zip(al.chunks(h))
                {
                    for head in 0..h {
                        scale(&mut row[2 * d + head * dh..2 * d + (head + 1) * dh], comp[head] * factor[head]);
                        scale(&mut row[head * dh..(head + 1) * dh], inc[head] * al[head]);
                    }
                }
            });
        // KV_h = K_hᵀ V_h, [dh, dh] per head.
        let qkv: &[f32] = qkv;
        let kv: Vec<Vec<f32>> = (0..h)
            .into_par_iter()
            .map(|head| {
                let mut m = vec![0f32; dh * dh];
                let kt = View { data: &qkv[d + head * dh..], rows: dh, cols: n, rs: 1, cs: s };
                let v = View { data: &qkv[2 * d + head * dh..], rows: n, cols: dh, rs: s, cs: 1 };
                matmul(&mut m, dh, kt, v, false, false);
                m
            })
            .collect();
        // out_h = Q_h KV_h.
        out.par_chunks_mut(d * ROW_CHUNK * 4).zip(qkv.par_chunks(s * ROW_CHUNK * 4)).for_each(|(o, c)| {
            let rows = o.len() / d;
            for (head, kv) in kv.iter().enumerate() {
                let q = View { data: &c[head * dh..], rows, cols: dh, rs: s, cs: 1 };
                let kvv = View::rows(kv, dh, dh, dh);
                matmul(&mut o[head * dh..], d, q, kvv, false, false);
            }
        });
    }
}

/// Adds per-chunk partial sums. Callers collect the parts and fold them in chunk order:
/// rayon's `reduce` would associate them in an order that depends on work stealing, and the
/// float sums (hence the embeddings) would differ in the last bits from run to run.
fn add_pair(mut a: (Vec<f32>, Vec<f32>), b: (Vec<f32>, Vec<f32>)) -> (Vec<f32>, Vec<f32>) {
    add_assign(&mut a.0, &b.0);
    add_assign(&mut a.1, &b.1);
    a
}

// ---------------------------------------------------------------------------------------------
// Gene-embedding bag
// ---------------------------------------------------------------------------------------------

/// Feature columns per panel of [`GenePanels`]: a cell's partial sums for one panel fill 8
/// AVX2 registers.
const PANEL: usize = 64;
/// Genes per tile: one tile of a panel (128 × 64 × 4 B = 32 KiB) stays in L1/L2 while the
/// cells of a block that express its genes are summed (tile and block sizes measured on the
/// 85M shapes, `sclm bench cellplm-embed`).
const TILE: usize = 128;
/// Cells per parallel task of [`GenePanels::bag`].
const BAG_ROWS: usize = 512;

/// A gene-embedding table stored panel-major for the sparse bag: `[d / 64][genes][64]` (the
/// last panel zero-padded).
#[derive(Debug, Clone)]
pub struct GenePanels {
    genes: usize,
    d: usize,
    data: Vec<f32>,
}

impl GenePanels {
    /// Re-lays a row-major `genes × d` table.
    ///
    /// # Panics
    /// If `table.len() != genes · d`.
    pub fn new(table: &[f32], genes: usize, d: usize) -> Self {
        assert_eq!(table.len(), genes * d, "table size");
        let panels = d.div_ceil(PANEL);
        let mut data = vec![0f32; panels * genes * PANEL];
        if genes > 0 {
            data.par_chunks_mut(genes * PANEL).enumerate().for_each(|(p, panel)| {
                let (c0, c1) = (p * PANEL, ((p + 1) * PANEL).min(d));
                for (g, dst) in panel.chunks_mut(PANEL).enumerate() {
                    dst[..c1 - c0].copy_from_slice(&table[g * d + c0..g * d + c1]);
                }
            });
        }
        GenePanels { genes, d, data }
    }

    /// Embedding dimension.
    pub fn dim(&self) -> usize {
        self.d
    }

    /// `out[i] = Σ_j f(x_ij) · table[j]` for sparse rows `x` (CellPLM Eq. 3); work is
    /// `nnz · d`. Within a block of cells the entries are bucketed by gene tile (counting sort,
    /// stable in cell order); then, panel by panel, each cell's entries in a tile are summed in
    /// registers against the L1-resident tile and added to its output once.
    ///
    /// # Shapes
    /// - `x`: `n × genes` → `n × d`, row-major
    ///
    /// # Panics
    /// If `x` has another number of columns than the table has genes.
    pub fn bag(&self, x: &CsrRows<'_>, transform: ValueTransform) -> Vec<f32> {
        assert_eq!(x.n_cols, self.genes, "input genes");
        let (n, d) = (x.n_rows(), self.d);
        let (tile, br) = (TILE, BAG_ROWS);
        let n_tiles = self.genes.div_ceil(tile);
        let mut out = vec![0f32; n * d];
        out.par_chunks_mut(br * d).enumerate().for_each(|(b, chunk)| {
            let start = b * br;
            let end = (start + br).min(n);
            let (lo, hi) = (x.indptr[start], x.indptr[end]);
            let mut first = vec![0u32; n_tiles + 1];
            for &c in &x.indices[lo..hi] {
                first[c as usize / tile + 1] += 1;
            }
            for t in 0..n_tiles {
                first[t + 1] += first[t];
            }
            let mut fill = first.clone();
            let mut rows = vec![0u32; hi - lo];
            let mut genes = vec![0u32; hi - lo];
            let mut vals = vec![0f32; hi - lo];
            for r in start..end {
                for k in x.indptr[r]..x.indptr[r + 1] {
                    let g = x.indices[k];
                    let slot = &mut fill[g as usize / tile];
                    let e = *slot as usize;
                    rows[e] = (r - start) as u32;
                    genes[e] = g;
                    vals[e] = match transform {
                        ValueTransform::Identity => x.data[k],
                        ValueTransform::Log1p => x.data[k].ln_1p(),
                    };
                    *slot += 1;
                }
            }
            let nr = end - start;
            let mut acc = vec![0f32; nr * PANEL];
            for (p, panel) in self.data.chunks(self.genes * PANEL).enumerate() {
                let (c0, c1) = (p * PANEL, ((p + 1) * PANEL).min(d));
                acc.fill(0.0);
                bag_panel(&mut acc, panel, &first, &rows, &genes, &vals);
                for (r, a) in acc.chunks(PANEL).enumerate() {
                    chunk[r * d + c0..r * d + c1].copy_from_slice(&a[..c1 - c0]);
                }
            }
        });
        out
    }
}

simd! {
    /// One panel of [`GenePanels::bag`] for a block of cells: for each gene tile
    /// (`first[t]..first[t + 1]`, entries in cell order), `out[r] += Σ v · panel[gene]` over
    /// the runs of entries of cell `r` (`out` is `cells × 64`).
    fn bag_panel(out: &mut [f32], panel: &[f32], first: &[u32], rows: &[u32], genes: &[u32], vals: &[f32]) {
        for t in 0..first.len() - 1 {
            let (mut e, z) = (first[t] as usize, first[t + 1] as usize);
            while e < z {
                let r = rows[e];
                let mut acc = [0f32; PANEL];
                while e < z && rows[e] == r {
                    let g = genes[e] as usize;
                    let row: &[f32; PANEL] = panel[g * PANEL..(g + 1) * PANEL].try_into().expect("panel row");
                    let v = vals[e];
                    for l in 0..PANEL {
                        acc[l] += v * row[l];
                    }
                    e += 1;
                }
                let o: &mut [f32; PANEL] = (&mut out[r as usize * PANEL..(r as usize + 1) * PANEL]).try_into().expect("out row");
                for l in 0..PANEL {
                    o[l] += acc[l];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std() {
        let mut worst = 0f64;
        for i in -8000..=8000 {
            let x = i as f32 * 0.01;
            let e = (x as f64).exp();
            worst = worst.max(((exp_f32(x) as f64 - e) / e).abs());
        }
        assert!(worst < 4e-7, "relative error {worst}");
        assert!(exp_f32(-200.0) >= 0.0 && exp_f32(-200.0) < 1e-37);
        assert!(exp_f32(200.0).is_finite());
    }

    #[test]
    fn erf_and_gelu_match_f64() {
        fn erf64(x: f64) -> f64 {
            // Series for |x| < 3, continued fraction beyond: accurate to ~1e-12 here.
            if x.abs() < 3.0 {
                let mut sum = x;
                let mut term = x;
                let mut k = 0.0;
                loop {
                    k += 1.0;
                    term *= -x * x / k;
                    let add = term / (2.0 * k + 1.0);
                    sum += add;
                    if add.abs() < 1e-17 {
                        break;
                    }
                }
                sum * 2.0 / std::f64::consts::PI.sqrt()
            } else {
                let t = x.abs();
                let mut f = 0.0;
                for k in (1..60).rev() {
                    f = (k as f64 / 2.0) / (t + f);
                }
                let erfc = (-t * t).exp() / std::f64::consts::PI.sqrt() / (t + f);
                x.signum() * (1.0 - erfc)
            }
        }
        let mut worst = 0f64;
        let mut worst_gelu = 0f64;
        for i in -1000..=1000 {
            let x = i as f32 * 0.007;
            worst = worst.max((erf_f32(x) as f64 - erf64(x as f64)).abs());
            let g = 0.5 * x as f64 * (1.0 + erf64(x as f64 / 2f64.sqrt()));
            worst_gelu = worst_gelu.max((gelu_f32(x) as f64 - g).abs());
        }
        assert!(worst < 1e-6, "erf error {worst}");
        assert!(worst_gelu < 2e-6, "gelu error {worst_gelu}");
        assert!((erf_f32(9.0) - 1.0).abs() < 1e-6 && (erf_f32(-9.0) + 1.0).abs() < 1e-6);
    }

    #[test]
    fn matmul_matches_naive_with_strides() {
        let (m, k, n) = (7, 5, 3);
        let a: Vec<f32> = (0..m * k * 2).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
        // a viewed with row stride 2k (every other block of k).
        let av = View { data: &a, rows: m, cols: k, rs: 2 * k, cs: 1 };
        let mut dst = vec![1f32; m * n];
        matmul(&mut dst, n, av, View::rows(&b, k, n, n), true, false);
        for i in 0..m {
            for j in 0..n {
                let want: f32 = 1.0 + (0..k).map(|t| a[i * 2 * k + t] * b[t * n + j]).sum::<f32>();
                assert!((dst[i * n + j] - want).abs() < 1e-5);
            }
        }
    }

    #[test]
    fn gene_bag_matches_dense_sum() {
        let (g, d) = (40, 300); // d is not a multiple of the panel width
        let table: Vec<f32> = (0..g * d).map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0).collect();
        // 3 cells: one empty, one with repeated-free genes, one dense-ish.
        let indptr = [0usize, 0, 3, 8];
        let indices = [2u32, 5, 39, 0, 1, 2, 20, 39];
        let data = [1.0f32, 3.0, 2.0, 1.0, 1.0, 7.0, 2.0, 1.0];
        let x = CsrRows::new(g, &indptr, &indices, &data).unwrap();
        let out = GenePanels::new(&table, g, d).bag(&x, ValueTransform::Log1p);
        for r in 0..3 {
            for c in 0..d {
                let want: f32 =
                    (indptr[r]..indptr[r + 1]).map(|k| data[k].ln_1p() * table[indices[k] as usize * d + c]).sum();
                assert!((out[r * d + c] - want).abs() < 1e-5);
            }
        }
    }

    fn layer_matches_burn(norm: crate::encoder::NormKind, activation: ActivationKind) {
        use crate::attention::AttentionKind;
        use crate::encoder::EncoderLayerConfig;
        use burn::prelude::*;
        use burn::tensor::Distribution;
        let device = crate::cpu_device();
        crate::seed_everything(3, &device);
        let (n, d, heads) = (150, 64, 4);
        let layer = EncoderLayerConfig::new(d, heads, 2 * d)
            .with_dropout(0.0)
            .with_norm(norm)
            .with_activation(activation)
            .with_attention(AttentionKind::Flow)
            .init(&device);
        let x = Tensor::<3>::random([1, n, d], Distribution::Normal(0.0, 1.0), &device);
        let want = to_vec(layer.forward(x.clone(), None));
        let host = HostEncoderLayer::from_layer(&layer).expect("flow layer");
        let mut got = to_vec(x);
        host.forward(&mut got, n);
        let worst = want.iter().zip(&got).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(worst < 1e-4, "max abs difference {worst}");
    }

    #[test]
    fn encoder_layer_matches_burn_layer_norm_gelu() {
        layer_matches_burn(crate::encoder::NormKind::LayerNorm, ActivationKind::Gelu);
    }

    #[test]
    fn encoder_layer_matches_burn_group_norm_relu() {
        layer_matches_burn(crate::encoder::NormKind::GroupNorm { groups: 4 }, ActivationKind::Relu);
    }

    #[test]
    fn softmax_layers_keep_the_burn_path() {
        use crate::encoder::EncoderLayerConfig;
        let layer = EncoderLayerConfig::new(16, 2, 32).init(&crate::cpu_device());
        assert!(HostEncoderLayer::from_layer(&layer).is_none());
    }
}
