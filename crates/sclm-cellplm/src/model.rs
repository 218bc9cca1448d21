//! The CellPLM model (Wen et al. 2023, "CellPLM: pre-training of cell language model beyond
//! single cells", §3 and appendix B; layer layout and inference path of the published code,
//! PyPI `cellplm` 0.1.0.post2, `OmicsFormer`):
//!
//! gene-embedding bag → Linear → ReLU → Dropout → norm (+ optional 2-D positional encoding)
//! → Flowformer encoder over the cells of one group → LayerNorm → latent (GMVAE / VAE / AE)
//! → batch-aware NB decoder.
//!
//! One forward call handles one *group* of cells (one obs batch = one "sentence"): Flowformer
//! attention mixes the cells of the group and nothing else.
use burn::module::Param;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, relu, softmax, softplus};
use burn::tensor::{Distribution, TensorData};
use sclm_nn::attention::AttentionKind;
use sclm_nn::burn;
use sclm_nn::embedding::{
    normalize_coordinates, sinusoidal_pe_2d, CsrRows, GeneEmbeddingBag, GeneEmbeddingBagConfig, ValueTransform,
};
use sclm_nn::encoder::{ActivationKind, EncoderLayer, EncoderLayerConfig, Norm, NormKind};

use crate::config::{CellPlmConfig, DecoderKind, LatentKind, NormChoice};
use crate::error::{CellPlmError, Result};

/// Epsilon of every LayerNorm / GroupNorm (PyTorch default).
pub(crate) const NORM_EPS: f64 = 1e-5;

pub(crate) fn tensor2(data: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn int1(data: Vec<i64>, device: &Device) -> Tensor<1, Int> {
    let n = data.len();
    Tensor::from_data(TensorData::new(data, [n]), device)
}

/// Host copy of a float tensor (row-major).
pub fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().expect("float tensor data")
}

fn norm_kind(n: NormChoice) -> NormKind {
    match n {
        NormChoice::Groupnorm => NormKind::GroupNorm { groups: 4 },
        NormChoice::Layernorm => NormKind::LayerNorm,
    }
}

/// Each row's stored values scaled to sum to `target` (all-zero rows stay zero).
pub(crate) fn scale_rows(x: &CsrRows<'_>, target: f64) -> Vec<f32> {
    (0..x.n_rows())
        .flat_map(|r| {
            let vals = &x.data[x.indptr[r]..x.indptr[r + 1]];
            let total: f64 = vals.iter().map(|&v| v as f64).sum();
            let f = if total > 0.0 { target / total } else { 0.0 };
            vals.iter().map(move |&v| (v as f64 * f) as f32)
        })
        .collect()
}

/// PReLU with one shared slope (`nn.PReLU()`): `max(0, x) + a · min(0, x)`.
fn prelu<const D: usize>(x: Tensor<D>, a: &Param<Tensor<1>>) -> Tensor<D> {
    let mut shape = [1usize; D];
    shape[D - 1] = 1;
    let a = a.val().reshape(shape);
    relu(x.clone()) + x.clamp_max(0.0) * a
}

// ---------------------------------------------------------------------------------------------
// Embedder (§3.2 Eq. 3; appendix B for the positional encoding)
// ---------------------------------------------------------------------------------------------

/// Cell embedder: `Σ_j log1p(x_ij) · h_j` over the sparse raw counts of cell i (no library-size
/// normalisation, as published), optional 2-D positional encoding added, then
/// `Linear → ReLU → Dropout → norm` (published `extra_linear`).
#[derive(Module, Debug)]
pub struct Embedder {
    /// Gene embedding bag (`embedder.feat_enc.emb`, `[genes, enc_hid]`).
    pub feat_enc: GeneEmbeddingBag,
    /// `embedder.extra_linear.0`.
    pub linear: Linear,
    /// `embedder.extra_linear.3` (GroupNorm(4) in the published model).
    pub norm: Norm,
    /// Learned placeholder encoding for cells without coordinates (`embedder.pe_enc.missing_pe`);
    /// present only when the positional encoding is on.
    pub missing_pe: Option<Param<Tensor<1>>>,
    dropout: Dropout,
    #[module(skip)]
    normalize_total: Option<f64>,
}

impl Embedder {
    fn new(c: &CellPlmConfig, device: &Device) -> Self {
        let d = c.enc_hid;
        Embedder {
            feat_enc: GeneEmbeddingBagConfig::new(c.n_genes(), d).with_transform(ValueTransform::Log1p).init(device),
            linear: LinearConfig::new(d, d).init(device),
            norm: norm_kind(c.norm).init(d, NORM_EPS, device),
            missing_pe: c
                .positional_encoding
                .then(|| Param::from_tensor(Tensor::random([d], Distribution::Normal(0.0, 0.02), device))),
            dropout: DropoutConfig::new(c.model_dropout).init(),
            normalize_total: c.normalize_total,
        }
    }

    /// The positional encoding of a group: the 2-D sinusoid of the per-group normalised
    /// coordinates (appendix B, Eq. 8) for cells with finite non-negative coordinates, the
    /// learned placeholder for the others (the published pipeline marks them with −1).
    ///
    /// # Shapes
    /// - `coords`: `n` pairs (or none: every cell lacks coordinates)
    /// - output: `[n, enc_hid]`
    fn positional(&self, n: usize, coords: Option<&[[f32; 2]]>, missing: &Param<Tensor<1>>) -> Result<Tensor<2>> {
        let d = missing.dims()[0];
        let device = missing.device();
        let placeholder = missing.val().reshape([1, d]).expand([n, d]);
        let Some(coords) = coords else { return Ok(placeholder) };
        if coords.len() != n {
            return Err(CellPlmError::Input(format!("{} coordinates for {n} cells", coords.len())));
        }
        let valid: Vec<bool> = coords.iter().map(|c| c.iter().all(|v| v.is_finite() && *v >= 0.0)).collect();
        if !valid.iter().any(|&v| v) {
            return Ok(placeholder);
        }
        let present: Vec<[f32; 2]> = coords.iter().zip(&valid).filter(|(_, &v)| v).map(|(c, _)| *c).collect();
        let normed = normalize_coordinates(&present);
        let mut it = normed.into_iter();
        let all: Vec<[f32; 2]> = valid.iter().map(|&v| if v { it.next().unwrap() } else { [0.0, 0.0] }).collect();
        let sin = sinusoidal_pe_2d(&all, d, &device)?;
        let w = tensor2(valid.iter().map(|&v| if v { 1.0 } else { 0.0 }).collect(), [n, 1], &device);
        Ok(sin * w.clone() + placeholder * w.neg().add_scalar(1.0))
    }

    /// The per-cell total the input is scaled to before the bag (none: raw counts).
    pub(crate) fn normalize_total(&self) -> Option<f64> {
        self.normalize_total
    }

    /// The positional encoding added to the bag, or none when the model has it switched off.
    ///
    /// # Shapes
    /// - `coords`: `n` pairs → `[n, enc_hid]`
    pub(crate) fn positional_encoding(&self, n: usize, coords: Option<&[[f32; 2]]>) -> Result<Option<Tensor<2>>> {
        self.missing_pe.as_ref().map(|m| self.positional(n, coords, m)).transpose()
    }

    /// Embeds the cells of one group.
    ///
    /// # Shapes
    /// - `x`: `n × genes` sparse raw counts; `coords`: `n` pairs
    /// - output: `[n, enc_hid]`
    pub fn forward(&self, x: &CsrRows<'_>, coords: Option<&[[f32; 2]]>) -> Result<Tensor<2>> {
        self.forward_marked(x, coords, None)
    }

    /// [`Embedder::forward`] with `value · h_gene` added to the sum of each marked cell.
    ///
    /// # Shapes
    /// - `markers.0`: `n` entries (vocabulary index or none)
    /// - output: `[n, enc_hid]`
    pub fn forward_marked(
        &self,
        x: &CsrRows<'_>,
        coords: Option<&[[f32; 2]]>,
        markers: Option<(&[Option<u32>], f32)>,
    ) -> Result<Tensor<2>> {
        let scaled: Vec<f32>;
        let x = match self.normalize_total {
            None => *x,
            Some(target) => {
                scaled = scale_rows(x, target);
                CsrRows::new(x.n_cols, x.indptr, x.indices, &scaled)?
            }
        };
        let x = &x;
        let mut h = self.feat_enc.forward(x)?;
        if let Some((marks, value)) = markers {
            let n = x.n_rows();
            if marks.len() != n {
                return Err(CellPlmError::Input(format!("{} markers for {n} cells", marks.len())));
            }
            let [genes, d] = self.feat_enc.emb.dims();
            if let Some(bad) = marks.iter().flatten().find(|&&g| g as usize >= genes) {
                return Err(CellPlmError::Input(format!("marker gene {bad} outside the vocabulary of {genes}")));
            }
            // Unmarked rows pick a zero row appended to the table.
            let device = h.device();
            let table = Tensor::cat(vec![self.feat_enc.emb.val(), Tensor::zeros([1, d], &device)], 0);
            let idx = marks.iter().map(|m| m.map_or(genes as i64, |g| g as i64)).collect();
            h = h + table.select(0, int1(idx, &device)).mul_scalar(value as f64);
        }
        if let Some(m) = &self.missing_pe {
            h = h + self.positional(x.n_rows(), coords, m)?;
        }
        Ok(self.norm.forward(self.dropout.forward(relu(self.linear.forward(h)))))
    }
}

// ---------------------------------------------------------------------------------------------
// Latent layers (§3.3)
// ---------------------------------------------------------------------------------------------

/// GMVAE latent as published (`latent.layers.1.inference.*`): q(y|h) = Linear(D→K);
/// q(z|h,y): `ReLU(Linear(D+K → 512))` then mean and softplus variance heads; prior p(z|y) mean
/// and softplus variance = Linear(K→dz).
///
/// Re-implemented here rather than taken from `sclm_nn::latent::GmvaeLatent`, whose hidden width
/// is `d_latent` (published: a fixed 512), whose variances carry +1e-6 and whose z term is the
/// analytic KL (published: one-sample log-density difference). Should move down into sclm-nn if
/// another family needs this exact variant.
#[derive(Module, Debug)]
pub struct GmvaeLatent {
    /// `inference_qyx.0.logits`.
    pub logits: Linear,
    /// `inference_qzyx.0` (`D + K → qzyx_hidden`).
    pub qzyx_hidden: Linear,
    /// `inference_qzyx.2.mu`.
    pub qzyx_mu: Linear,
    /// `inference_qzyx.2.var` (through softplus).
    pub qzyx_var: Linear,
    /// Prior mean `y_mu`.
    pub y_mu: Linear,
    /// Prior variance `y_var` (through softplus).
    pub y_var: Linear,
    k: usize,
    lamda: f64,
    w_li: f64,
    w_en: f64,
}

/// Plain Gaussian VAE latent as published (`latent.layers.1.hid_2mu`, `hid_2sigma`):
/// `log σ² = 2 log √(exp(clamp(s, −5, 5)) + 1e-4)`.
#[derive(Module, Debug)]
pub struct VaeLatent {
    /// `hid_2mu`.
    pub mu: Linear,
    /// `hid_2sigma`.
    pub sigma: Linear,
}

/// Linear bottleneck (`latent.layers.1.lat_2lat.0`).
#[derive(Module, Debug)]
pub struct AeLatent {
    /// `lat_2lat.0`.
    pub linear: Linear,
}

/// The latent layer of a model (one per model: the size difference of the variants is harmless).
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Latent {
    /// Gaussian mixture.
    Gmvae(GmvaeLatent),
    /// Gaussian.
    Vae(VaeLatent),
    /// Linear.
    Ae(AeLatent),
}

/// What a latent layer returns.
struct LatentResult {
    embedding: Tensor<2>,
    z: Tensor<2>,
    loss: Tensor<1>,
    terms: Vec<(String, Tensor<1>)>,
    activations: Vec<(String, Tensor<2>)>,
}

/// `log N(z; μ, v) = −½ Σ_d (log 2π + log(v + 1e-8) + (z − μ)² / (v + 1e-8))`, per row.
fn log_normal(z: Tensor<2>, mu: Tensor<2>, var: Tensor<2>) -> Tensor<2> {
    let v = var.add_scalar(1e-8);
    let t = v.clone().log().add_scalar((2.0 * std::f64::consts::PI).ln()) + (z - mu).powi_scalar(2) / v;
    t.sum_dim(1).mul_scalar(-0.5)
}

impl GmvaeLatent {
    /// # Shapes
    /// - `h`: `[n, D]` → embedding / z `[n, dz]`, losses `[1]`
    fn forward(&self, h: Tensor<2>, deterministic: bool) -> LatentResult {
        let n = h.dims()[0];
        let z_soft_y = self.mean_soft_y(h.clone());
        let logits = self.logits.forward(h.clone());
        let prob = softmax(logits.clone(), 1);
        let y = if deterministic {
            logits.clone().argmax(1).reshape([n]).one_hot::<2>(self.k).float()
        } else {
            // Hard Gumbel-softmax sample (the published eval path).
            let u = logits.random_like(Distribution::Uniform(0.0, 1.0));
            let g = u.add_scalar(1e-20).log().neg().add_scalar(1e-20).log().neg();
            (logits.clone() + g).argmax(1).reshape([n]).one_hot::<2>(self.k).float()
        };
        let hidden = relu(self.qzyx_hidden.forward(Tensor::cat(vec![h, y.clone()], 1)));
        let mean = self.qzyx_mu.forward(hidden.clone());
        let var = softplus(self.qzyx_var.forward(hidden.clone()), 1.0);
        let y_mean = self.y_mu.forward(y.clone());
        let y_var = softplus(self.y_var.forward(y.clone()), 1.0);
        let z = if deterministic {
            mean.clone()
        } else {
            mean.clone() + var.clone().sqrt() * mean.random_like(Distribution::Normal(0.0, 1.0))
        };
        let gauss = (log_normal(z.clone(), mean.clone(), var.clone())
            - log_normal(z.clone(), y_mean.clone(), y_var.clone()))
        .mean();
        let cat = (prob.clone() * log_softmax(logits.clone(), 1)).sum_dim(1).mean().add_scalar((self.k as f64).ln());
        let loss = gauss.clone().clamp_min(self.lamda).mul_scalar(self.w_li)
            + cat.clone().clamp_min(self.lamda).mul_scalar(self.w_en);
        LatentResult {
            embedding: mean.clone(),
            z,
            loss,
            terms: vec![("gmvae.loss_gauss_raw".into(), gauss), ("gmvae.loss_cat_raw".into(), cat)],
            activations: vec![
                ("gmvae.logits".into(), logits),
                ("gmvae.prob".into(), prob),
                ("gmvae.y".into(), y),
                ("gmvae.qzyx_hidden".into(), hidden),
                ("gmvae.mean".into(), mean),
                ("gmvae.var".into(), var),
                ("gmvae.y_mean".into(), y_mean),
                ("gmvae.y_var".into(), y_var),
                ("gmvae.z_soft_y".into(), z_soft_y),
            ],
        }
    }

    /// Number of clusters.
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// The q(z|h,y) mean with y = q(y|h) (expected-value alternative to the argmax).
    ///
    /// # Shapes
    /// `h`: `[n, D]` → `[n, dz]`
    pub fn mean_soft_y(&self, h: Tensor<2>) -> Tensor<2> {
        let prob = softmax(self.logits.forward(h.clone()), 1);
        let hidden = relu(self.qzyx_hidden.forward(Tensor::cat(vec![h, prob], 1)));
        self.qzyx_mu.forward(hidden)
    }
}

impl VaeLatent {
    fn forward(&self, h: Tensor<2>, deterministic: bool) -> LatentResult {
        let mu = self.mu.forward(h.clone());
        let lv = self.sigma.forward(h).clamp(-5.0, 5.0);
        let log_var = lv.exp().add_scalar(1e-4).sqrt().log().mul_scalar(2.0);
        let z = if deterministic {
            mu.clone()
        } else {
            mu.clone() + log_var.clone().mul_scalar(0.5).exp() * mu.random_like(Distribution::Normal(0.0, 1.0))
        };
        let kl = (log_var.clone().add_scalar(1.0) - mu.clone().powi_scalar(2) - log_var.clone().exp())
            .sum_dim(1)
            .mul_scalar(-0.5)
            .mean();
        let device = mu.device();
        LatentResult {
            embedding: mu.clone(),
            z,
            loss: Tensor::zeros([1], &device),
            terms: vec![("vae.kl_raw".into(), kl)],
            activations: vec![("vae.mu".into(), mu), ("vae.log_var".into(), log_var)],
        }
    }
}

impl Latent {
    fn new(c: &CellPlmConfig, device: &Device) -> Self {
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        let (d, dz, k) = (c.enc_hid, c.post_latent_dim, c.num_clusters);
        match c.latent_mod {
            LatentKind::Gmvae => Latent::Gmvae(GmvaeLatent {
                logits: lin(d, k),
                qzyx_hidden: lin(d + k, c.qzyx_hidden),
                qzyx_mu: lin(c.qzyx_hidden, dz),
                // Variance bias −4 (softplus ≈ 0.018): a fresh posterior starts nearly
                // deterministic, so the decoder sees the encoder's signal rather than unit noise
                // and learns to use z (at unit variance it learns to ignore z and the posterior
                // never sharpens).
                qzyx_var: {
                    let mut l = lin(c.qzyx_hidden, dz);
                    l.bias = Some(Param::from_tensor(Tensor::full([dz], -4.0, device)));
                    l
                },
                y_mu: lin(k, dz),
                y_var: lin(k, dz),
                k,
                lamda: c.lamda,
                w_li: c.w_li,
                w_en: c.w_en,
            }),
            LatentKind::Vae => Latent::Vae(VaeLatent { mu: lin(d, dz), sigma: lin(d, dz) }),
            LatentKind::Ae => Latent::Ae(AeLatent { linear: lin(d, dz) }),
        }
    }

    fn forward(&self, h: Tensor<2>, deterministic: bool) -> LatentResult {
        match self {
            Latent::Gmvae(g) => g.forward(h, deterministic),
            Latent::Vae(v) => v.forward(h, deterministic),
            Latent::Ae(a) => {
                let z = a.linear.forward(h);
                let device = z.device();
                LatentResult {
                    embedding: z.clone(),
                    z,
                    loss: Tensor::zeros([1], &device),
                    terms: vec![],
                    activations: vec![],
                }
            }
        }
    }

    fn embedding(&self, h: Tensor<2>, deterministic: bool) -> Tensor<2> {
        match self {
            Latent::Ae(a) => a.linear.forward(h),
            Latent::Vae(v) => v.mu.forward(h),
            Latent::Gmvae(_) => self.forward(h, deterministic).embedding,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Decoder (§3.4; published `NBMLPDecoder`)
// ---------------------------------------------------------------------------------------------

/// One hidden decoder layer: `Linear → PReLU → Dropout → norm` (`decoder.layers.{i}.{0,1,3}`).
#[derive(Module, Debug)]
pub struct DecoderLayer {
    /// `.0`.
    pub linear: Linear,
    /// `.1` PReLU slope `[1]`.
    pub prelu: Param<Tensor<1>>,
    /// `.3`.
    pub norm: Norm,
    dropout: Dropout,
}

/// A covariate embedding added after a decoder layer: `norm(PReLU(Embedding(id)))`
/// (`decoder.covariate_layers.{i}.{batch,dataset}.{0,1,2}`). An unknown id uses the sum of all
/// rows of the table, as the published decoder does when the covariate is not given.
#[derive(Module, Debug)]
pub struct CovariateEmbedding {
    /// `.0` table `[entries, dec_hid]`.
    pub table: Param<Tensor<2>>,
    /// `.1` PReLU slope `[1]`.
    pub prelu: Param<Tensor<1>>,
    /// `.2`.
    pub norm: Norm,
}

impl CovariateEmbedding {
    /// # Shapes
    /// - `ids`: `n` ids (`None` = unknown) or none at all (every cell unknown)
    /// - output: `[n, dec_hid]`
    fn forward(&self, n: usize, ids: Option<&[Option<usize>]>, what: &str) -> Result<Tensor<2>> {
        let [entries, d] = self.table.dims();
        let device = self.table.device();
        let table = self.table.val();
        let sum_row = table.clone().sum_dim(0); // [1, d]
        let rows = match ids {
            None => sum_row.expand([n, d]),
            Some(ids) => {
                if ids.len() != n {
                    return Err(CellPlmError::Input(format!("{} {what} ids for {n} cells", ids.len())));
                }
                if let Some(bad) = ids.iter().flatten().find(|&&i| i >= entries) {
                    return Err(CellPlmError::Input(format!(
                        "{what} id {bad} out of range (table has {entries} rows)"
                    )));
                }
                let ext = Tensor::cat(vec![table, sum_row], 0);
                let idx = ids.iter().map(|i| i.unwrap_or(entries) as i64).collect();
                ext.select(0, int1(idx, &device))
            }
        };
        Ok(self.norm.forward(prelu(rows, &self.prelu)))
    }
}

/// The covariate embeddings of one decoder layer.
#[derive(Module, Debug)]
pub struct CovariateLayers {
    /// Batch covariate (`batch_num > 0`).
    pub batch: Option<CovariateEmbedding>,
    /// Dataset covariate (`dataset_num > 0`).
    pub dataset: Option<CovariateEmbedding>,
}

/// Negative binomial head (published `NB`): `mean = clamp(exp(dec_mean.0(ReLU(dec_1(h)))), 1e-5, 1e6)`,
/// `disp = clamp(exp(dec_disp), 1e-4, 1e4)` per gene.
#[derive(Module, Debug)]
pub struct NbHead {
    /// `decoder.out_layer.dec_1` (`dec_hid → 128`).
    pub dec_1: Linear,
    /// `decoder.out_layer.dec_mean.0` (`128 → genes`).
    pub dec_mean: Linear,
    /// `decoder.out_layer.dec_disp` `[genes]`.
    pub dec_disp: Param<Tensor<1>>,
}

/// Expression head of the decoder (one per model).
#[derive(Module, Debug)]
#[allow(clippy::large_enum_variant)]
pub enum DecoderHead {
    /// Negative binomial.
    Nb(NbHead),
    /// `ReLU(Linear(dec_hid → genes))` (`decoder.out_layer.0`).
    Mlp(Linear),
}

/// The batch-aware decoder.
#[derive(Module, Debug)]
pub struct Decoder {
    /// Hidden layers (`dec_layers − 1`).
    pub layers: Vec<DecoderLayer>,
    /// Covariate embeddings per hidden layer (empty without covariate tables).
    pub covariate_layers: Vec<CovariateLayers>,
    /// Expression head.
    pub head: DecoderHead,
}

/// Covariate ids of the cells of a group (`None` entries / absent vectors = unknown: sum path).
#[derive(Debug, Clone, Copy, Default)]
pub struct Covariates<'a> {
    /// Batch covariate id per cell.
    pub batch: Option<&'a [Option<usize>]>,
    /// Dataset covariate id per cell.
    pub dataset: Option<&'a [Option<usize>]>,
}

/// Decoder outputs for one group.
#[derive(Debug, Clone)]
pub struct DecoderOutput {
    /// Hidden state after covariates (input of the head), `[n, dec_hid]`.
    pub hidden: Tensor<2>,
    /// NB mean, not rescaled to library size (or the MLP reconstruction), `[n, genes]`.
    pub mean: Tensor<2>,
    /// NB dispersion repeated per cell, `[n, genes]` (NB head only).
    pub disp: Option<Tensor<2>>,
}

impl Decoder {
    fn new(c: &CellPlmConfig, device: &Device) -> Self {
        let h = c.dec_hid;
        let norm = norm_kind(c.norm);
        let slope = || Param::from_tensor(Tensor::full([1], 0.25, device));
        let layers = (0..c.dec_layers - 1)
            .map(|i| DecoderLayer {
                linear: LinearConfig::new(if i == 0 { c.post_latent_dim } else { h }, h).init(device),
                prelu: slope(),
                norm: norm.init(h, NORM_EPS, device),
                dropout: DropoutConfig::new(c.model_dropout).init(),
            })
            .collect();
        let cov = |num: usize| {
            (num > 0).then(|| CovariateEmbedding {
                table: Param::from_tensor(Tensor::random([num, h], Distribution::Normal(0.0, 1.0), device)),
                prelu: slope(),
                norm: norm.init(h, NORM_EPS, device),
            })
        };
        let covariate_layers = if c.batch_num + c.dataset_num > 0 {
            (0..c.dec_layers - 1)
                .map(|_| CovariateLayers { batch: cov(c.batch_num), dataset: cov(c.dataset_num) })
                .collect()
        } else {
            vec![]
        };
        let g = c.n_genes();
        let head = match c.dec_mod {
            DecoderKind::Nbmlp => DecoderHead::Nb(NbHead {
                dec_1: LinearConfig::new(h, 128).init(device),
                // Zero-initialised output weights (bias: default): at initialisation every cell
                // gets the same profile, so the first steps fit the mean profile instead of
                // suppressing the cell-to-cell variation of z (which otherwise collapses the
                // encoder before the weak per-cell signal of the NB likelihood is picked up).
                dec_mean: LinearConfig::new(128, g).with_initializer(burn::nn::Initializer::Zeros).init(device),
                dec_disp: Param::from_tensor(Tensor::random([g], Distribution::Normal(0.0, 1.0), device)),
            }),
            DecoderKind::Mlp => DecoderHead::Mlp(LinearConfig::new(h, g).init(device)),
        };
        Decoder { layers, covariate_layers, head }
    }

    /// # Shapes
    /// - `z`: `[n, post_latent_dim]`; covariate ids: `n` each
    /// - output: hidden `[n, dec_hid]`, mean / disp `[n, genes]`
    pub fn forward(&self, z: Tensor<2>, cov: Covariates<'_>) -> Result<DecoderOutput> {
        let n = z.dims()[0];
        let mut x = z;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.norm.forward(layer.dropout.forward(prelu(layer.linear.forward(x), &layer.prelu)));
            if let Some(c) = self.covariate_layers.get(i) {
                if let Some(b) = &c.batch {
                    x = x + b.forward(n, cov.batch, "batch")?;
                }
                if let Some(d) = &c.dataset {
                    x = x + d.forward(n, cov.dataset, "dataset")?;
                }
            }
        }
        let (mean, disp) = match &self.head {
            DecoderHead::Nb(NbHead { dec_1, dec_mean, dec_disp }) => {
                let mean = dec_mean.forward(relu(dec_1.forward(x.clone()))).exp().clamp(1e-5, 1e6);
                let g = dec_disp.dims()[0];
                let disp = dec_disp.val().exp().clamp(1e-4, 1e4).reshape([1, g]).expand([n, g]);
                (mean, Some(disp))
            }
            DecoderHead::Mlp(out) => (relu(out.forward(x.clone())), None),
        };
        Ok(DecoderOutput { hidden: x, mean, disp })
    }
}

/// NB negative log-likelihood of raw counts as the published objective computes it: the mean is
/// first rescaled to each cell's library size (`μ' = μ / Σμ · Σx`), then with ε = 1e-10
/// `lnΓ(θ+ε) + lnΓ(x+1) − lnΓ(x+θ+ε) + (θ+x) ln(1 + μ'/(θ+ε)) + x (ln(θ+ε) − ln(μ'+ε))`,
/// summed over genes and averaged over cells.
///
/// # Shapes
/// - `counts`, `mean`, `disp`: `[n, genes]`
/// - output: `[1]`
pub fn nb_loss(counts: Tensor<2>, mean: Tensor<2>, disp: Tensor<2>) -> Tensor<1> {
    use sclm_nn::loss::lgamma;
    let eps = 1e-10;
    let lib = counts.clone().sum_dim(1);
    let mu = mean.clone() / mean.sum_dim(1) * lib;
    let th = disp.add_scalar(eps);
    let t1 = lgamma(th.clone()) + lgamma(counts.clone().add_scalar(1.0)) - lgamma(counts.clone() + th.clone());
    let t2 = (th.clone() + counts.clone()) * (mu.clone() / th.clone()).add_scalar(1.0).log()
        + counts * (th.log() - mu.add_scalar(eps).log());
    (t1 + t2).sum_dim(1).mean()
}

// ---------------------------------------------------------------------------------------------
// The model
// ---------------------------------------------------------------------------------------------

/// Input of one forward call: the cells of one group.
#[derive(Debug, Clone, Copy)]
pub struct GroupInput<'a> {
    /// Raw counts over the model vocabulary (`n × genes`).
    pub counts: CsrRows<'a>,
    /// Spatial coordinates per cell (negative or non-finite = missing); used only with the
    /// positional encoding.
    pub coords: Option<&'a [[f32; 2]]>,
    /// Decoder covariate ids.
    pub covariates: Covariates<'a>,
}

/// Everything one forward call computes.
#[derive(Debug, Clone)]
pub struct GroupOutput {
    /// Cell embedding (latent mean), `[n, post_latent_dim]`.
    pub embedding: Tensor<2>,
    /// Latent regularisation as the published forward reports it: for the GMVAE
    /// `w_li·max(λ, gauss) + w_en·max(λ, cat)`; 0 for VAE and AE. `[1]`.
    pub latent_loss: Tensor<1>,
    /// Unweighted latent terms (`gmvae.loss_gauss_raw`, `gmvae.loss_cat_raw`, `vae.kl_raw`), `[1]` each.
    pub latent_terms: Vec<(String, Tensor<1>)>,
    /// Decoder outputs (absent when the decoder was not run).
    pub decoder: Option<DecoderOutput>,
    /// Named intermediate activations (`embedder.out`, `encoder.layers.{i}.out`,
    /// `pre_latent_norm.out`, `gmvae.*`, `vae.*`), `[n, ·]` each.
    pub activations: Vec<(String, Tensor<2>)>,
}

impl GroupOutput {
    /// The activation of that name.
    pub fn activation(&self, name: &str) -> Option<&Tensor<2>> {
        self.activations.iter().find(|(k, _)| k == name).map(|(_, t)| t)
    }

    /// The latent term of that name.
    pub fn term(&self, name: &str) -> Option<&Tensor<1>> {
        self.latent_terms.iter().find(|(k, _)| k == name).map(|(_, t)| t)
    }
}

/// The CellPLM model. Build it with [`CellPlm::new`] (random weights), [`CellPlm::load_torch`]
/// (published checkpoint) or [`CellPlm::load_dir`] (our model directory).
#[derive(Module, Debug)]
pub struct CellPlm {
    /// Cell embedder.
    pub embedder: Embedder,
    /// Flowformer encoder layers (pre-norm, LayerNorm, FF 2·D with exact GELU).
    pub encoder: Vec<EncoderLayer>,
    /// LayerNorm before the latent layer (`pre_latent_norm.norm`).
    pub pre_latent_norm: LayerNorm,
    /// Latent layer.
    pub latent: Latent,
    /// Decoder.
    pub decoder: Decoder,
    #[module(skip)]
    config: CellPlmConfig,
}

impl CellPlmConfig {
    /// Builds the model with random weights on `device` (`FooConfig → init → Foo`; validates
    /// the configuration first).
    pub fn init(&self, device: &Device) -> Result<CellPlm> {
        CellPlm::new(self, device)
    }
}

impl CellPlm {
    /// A model with random weights on `device` (validates the configuration); the same as
    /// [`CellPlmConfig::init`].
    pub fn new(config: &CellPlmConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        let c = config;
        let layer = EncoderLayerConfig::new(c.enc_hid, c.enc_head, 2 * c.enc_hid)
            .with_dropout(c.model_dropout)
            .with_norm_first(true)
            .with_activation(ActivationKind::Gelu)
            .with_norm(NormKind::LayerNorm)
            .with_norm_eps(NORM_EPS)
            .with_attention(AttentionKind::Flow);
        Ok(CellPlm {
            embedder: Embedder::new(c, device),
            encoder: (0..c.enc_layers).map(|_| layer.init(device)).collect(),
            pre_latent_norm: LayerNormConfig::new(c.enc_hid).with_epsilon(NORM_EPS).init(device),
            latent: Latent::new(c, device),
            decoder: Decoder::new(c, device),
            config: c.clone(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &CellPlmConfig {
        &self.config
    }

    /// The model vocabulary (`gene_list`).
    pub fn genes(&self) -> &[String] {
        &self.config.gene_list
    }

    /// Embedding dimension.
    pub fn latent_dim(&self) -> usize {
        self.config.post_latent_dim
    }

    /// The device holding the parameters.
    pub fn device(&self) -> Device {
        self.pre_latent_norm.gamma.device()
    }

    /// Number of parameter values.
    pub fn num_params(&self) -> usize {
        self.num_params_inner()
    }

    fn num_params_inner(&self) -> usize {
        burn::module::Module::num_params(self)
    }

    /// Errors unless `counts` has one column per vocabulary gene and at least one cell.
    pub(crate) fn check_group(&self, counts: &CsrRows<'_>) -> Result<()> {
        if counts.n_cols != self.config.n_genes() {
            return Err(CellPlmError::Input(format!(
                "counts have {} genes, the model vocabulary has {}",
                counts.n_cols,
                self.config.n_genes()
            )));
        }
        if counts.n_rows() == 0 {
            return Err(CellPlmError::Input("a group has no cells".into()));
        }
        Ok(())
    }

    fn encode(
        &self,
        counts: &CsrRows<'_>,
        coords: Option<&[[f32; 2]]>,
        acts: Option<&mut Vec<(String, Tensor<2>)>>,
    ) -> Result<Tensor<2>> {
        self.encode_marked(counts, coords, None, acts)
    }

    /// The encoder with optional gene markers: `markers = (per-cell gene, value)` adds
    /// `value · h_gene` to the embedder's sum of a cell before its linear layer (the published
    /// perturbation trick: the perturbed gene enters with expression −100).
    fn encode_marked(
        &self,
        counts: &CsrRows<'_>,
        coords: Option<&[[f32; 2]]>,
        markers: Option<(&[Option<u32>], f32)>,
        acts: Option<&mut Vec<(String, Tensor<2>)>>,
    ) -> Result<Tensor<2>> {
        self.check_group(counts)?;
        let mut acts = acts;
        let h = self.embedder.forward_marked(counts, coords, markers)?;
        if let Some(a) = acts.as_deref_mut() {
            a.push(("embedder.out".into(), h.clone()));
        }
        let [n, d] = h.dims();
        let mut x = h.reshape([1, n, d]);
        for (i, layer) in self.encoder.iter().enumerate() {
            x = layer.forward(x, None);
            if let Some(a) = acts.as_deref_mut() {
                a.push((format!("encoder.layers.{i}.out"), x.clone().reshape([n, d])));
            }
        }
        let h = self.pre_latent_norm.forward(x.reshape([n, d]));
        if let Some(a) = acts {
            a.push(("pre_latent_norm.out".into(), h.clone()));
        }
        Ok(h)
    }

    /// Full forward pass over one group: embeddings, intermediate activations, latent loss
    /// terms and (when `decode`) the decoder outputs.
    ///
    /// # Shapes
    /// - `input.counts`: `n × genes` sparse raw counts
    /// - output: see [`GroupOutput`]
    pub fn forward(&self, input: &GroupInput<'_>, decode: bool) -> Result<GroupOutput> {
        self.forward_mode(input, decode, self.config.deterministic)
    }

    /// [`CellPlm::forward`] with the latent sampling chosen per call: `deterministic = false`
    /// samples the GMVAE cluster (hard Gumbel-softmax) and z (reparameterised), as in training.
    ///
    /// # Shapes
    /// as [`CellPlm::forward`]
    pub fn forward_mode(&self, input: &GroupInput<'_>, decode: bool, deterministic: bool) -> Result<GroupOutput> {
        let mut acts = Vec::new();
        let h = self.encode(&input.counts, input.coords, Some(&mut acts))?;
        let lat = self.latent.forward(h, deterministic);
        acts.extend(lat.activations);
        let decoder = if decode { Some(self.decoder.forward(lat.z, input.covariates)?) } else { None };
        Ok(GroupOutput {
            embedding: lat.embedding,
            latent_loss: lat.loss,
            latent_terms: lat.terms,
            decoder,
            activations: acts,
        })
    }

    /// Decoder output of a group whose cells carry gene markers (see
    /// [`Embedder::forward_marked`]); `deterministic = false` samples the latent as in training.
    ///
    /// # Shapes
    /// - `counts`: `n × genes`; `markers`: `n` → decoder mean `[n, genes]`
    pub fn decode_marked(
        &self,
        counts: &CsrRows<'_>,
        coords: Option<&[[f32; 2]]>,
        markers: (&[Option<u32>], f32),
        deterministic: bool,
    ) -> Result<Tensor<2>> {
        let h = self.encode_marked(counts, coords, Some(markers), None)?;
        let lat = self.latent.forward(h, deterministic);
        Ok(self.decoder.forward(lat.z, Covariates::default())?.mean)
    }

    /// Cell embeddings of one group (encoder and latent mean only; the zero-shot path).
    ///
    /// # Shapes
    /// - `counts`: `n × genes`; `coords`: `n` pairs
    /// - output: `[n, post_latent_dim]`
    pub fn embed_group(&self, counts: &CsrRows<'_>, coords: Option<&[[f32; 2]]>) -> Result<Tensor<2>> {
        let h = self.encode(counts, coords, None)?;
        Ok(self.latent.embedding(h, self.config.deterministic))
    }

    /// NB loss of a group given its decoder output (see [`nb_loss`]); errors for the MLP head.
    ///
    /// # Shapes
    /// - `counts`: `n × genes` → `[1]`
    pub fn nb_loss(&self, counts: &CsrRows<'_>, out: &DecoderOutput) -> Result<Tensor<1>> {
        let Some(disp) = &out.disp else {
            return Err(CellPlmError::Config("the NB loss needs the nbmlp decoder".into()));
        };
        let (n, g) = (counts.n_rows(), counts.n_cols);
        let mut dense = vec![0f32; n * g];
        for r in 0..n {
            for k in counts.indptr[r]..counts.indptr[r + 1] {
                dense[r * g + counts.indices[k] as usize] += counts.data[k];
            }
        }
        let x = tensor2(dense, [n, g], &self.device());
        Ok(nb_loss(x, out.mean.clone(), disp.clone()))
    }
}
