//! Fast CPU inference of the zero-shot embedding: a snapshot of the trained [`CellPlm`]'s
//! embedder, Flowformer layers, pre-latent norm and latent mean on host buffers
//! ([`sclm_nn::host`]), used by `sclm embed`, the streaming embedder and the benchmark.
//!
//! The snapshot computes exactly what [`CellPlm::embed_group`] computes (same formulas, float
//! rounding aside; tested against it to 1e-4) and falls back to it whenever the host path
//! does not apply: a model on another device (GPU) or with gradients, a GMVAE that samples its
//! cluster at inference (`deterministic: false`), or encoder layers other than pre-norm
//! Flowformer.
use sclm_nn::embedding::{CsrRows, ValueTransform};
use sclm_nn::host::{GenePanels, HostEncoderLayer, HostLinear, HostNorm, LayerScratch};

use crate::error::Result;
use crate::model::{to_vec, CellPlm, Latent, NORM_EPS};

/// The latent mean on the host.
enum HostLatent {
    /// One linear map (AE latent, VAE mean).
    Linear(HostLinear),
    /// GMVAE mean at the argmax cluster: `mu(ReLU(W_h h + W_y[argmax logits] + b))`.
    Gmvae { logits: HostLinear, hidden: HostLinear, cluster_rows: Vec<f32>, mu: HostLinear },
}

/// Host snapshot of a model's embedding path.
struct Host {
    table: GenePanels,
    linear: HostLinear,
    norm: HostNorm,
    layers: Vec<HostEncoderLayer>,
    pre_latent: HostNorm,
    latent: HostLatent,
}

/// A model prepared for fast zero-shot embedding (see the module docs). Build once with
/// [`CellPlm::inference`], then call [`CellPlmInference::embed_group`] per group.
pub struct CellPlmInference<'m> {
    model: &'m CellPlm,
    host: Option<Host>,
    /// Layer buffers reused from group to group (sized to the largest group so far).
    scratch: std::sync::Mutex<LayerScratch>,
}

impl CellPlm {
    /// Prepares fast CPU inference: copies the weights the embedding needs to host buffers
    /// (about the model's size in memory) when the host path applies, otherwise keeps using
    /// this model.
    pub fn inference(&self) -> CellPlmInference<'_> {
        CellPlmInference { model: self, host: Host::snapshot(self), scratch: Default::default() }
    }
}

impl Host {
    fn snapshot(model: &CellPlm) -> Option<Host> {
        let emb = &model.embedder.feat_enc.emb;
        if model.device() != sclm_nn::cpu_device() || emb.val().is_require_grad() {
            return None;
        }
        let layers = model.encoder.iter().map(HostEncoderLayer::from_layer).collect::<Option<Vec<_>>>()?;
        let latent = match &model.latent {
            Latent::Ae(a) => HostLatent::Linear(HostLinear::from_linear(&a.linear)),
            Latent::Vae(v) => HostLatent::Linear(HostLinear::from_linear(&v.mu)),
            Latent::Gmvae(g) => {
                if !model.config().deterministic {
                    return None;
                }
                let full = HostLinear::from_linear(&g.qzyx_hidden);
                let d = full.d_in - g.k();
                let hidden = HostLinear {
                    d_in: d,
                    d_out: full.d_out,
                    weight: full.weight[..d * full.d_out].to_vec(),
                    bias: full.bias.clone(),
                };
                HostLatent::Gmvae {
                    logits: HostLinear::from_linear(&g.logits),
                    hidden,
                    cluster_rows: full.weight[d * full.d_out..].to_vec(),
                    mu: HostLinear::from_linear(&g.qzyx_mu),
                }
            }
        };
        let [genes, d] = emb.dims();
        Some(Host {
            table: GenePanels::new(&to_vec(emb.val()), genes, d),
            linear: HostLinear::from_linear(&model.embedder.linear),
            norm: HostNorm::from_norm(&model.embedder.norm, NORM_EPS),
            layers,
            pre_latent: HostNorm::from_layer_norm(&model.pre_latent_norm, NORM_EPS),
            latent,
        })
    }

    fn embed(
        &self,
        model: &CellPlm,
        counts: &CsrRows<'_>,
        coords: Option<&[[f32; 2]]>,
        scratch: &mut LayerScratch,
    ) -> Result<Vec<f32>> {
        let n = counts.n_rows();
        let scaled;
        let counts = match model.embedder.normalize_total() {
            None => *counts,
            Some(target) => {
                scaled = crate::model::scale_rows(counts, target);
                CsrRows::new(counts.n_cols, counts.indptr, counts.indices, &scaled)?
            }
        };
        let mut h = self.table.bag(&counts, ValueTransform::Log1p);
        if let Some(pe) = model.embedder.positional_encoding(n, coords)? {
            sclm_nn::host::axpy(&mut h, 1.0, &to_vec(pe));
        }
        let h = self.linear.forward_relu(&h, n);
        let mut x = self.norm.forward(&h);
        for layer in &self.layers {
            layer.forward_with(&mut x, n, scratch);
        }
        let h = self.pre_latent.forward(&x);
        Ok(match &self.latent {
            HostLatent::Linear(l) => l.forward(&h, n),
            HostLatent::Gmvae { logits, hidden, cluster_rows, mu } => {
                let k = logits.d_out;
                let lg = logits.forward(&h, n);
                let mut hid = hidden.forward(&h, n);
                let w = hidden.d_out;
                for (row, l) in hid.chunks_mut(w).zip(lg.chunks(k)) {
                    // First maximum, as burn's argmax.
                    let best = (0..k).fold(0, |b, j| if l[j] > l[b] { j } else { b });
                    for (o, &c) in row.iter_mut().zip(&cluster_rows[best * w..(best + 1) * w]) {
                        *o = (*o + c).max(0.0);
                    }
                }
                mu.forward(&hid, n)
            }
        })
    }
}

impl CellPlmInference<'_> {
    /// Whether the fast host path is in use (otherwise calls go to the model).
    pub fn is_fast(&self) -> bool {
        self.host.is_some()
    }

    /// The embedding of one group, as [`CellPlm::embed_group`].
    ///
    /// # Shapes
    /// - `counts`: `n × genes` sparse raw counts; `coords`: `n` pairs
    /// - output: `n × latent_dim`, row-major
    pub fn embed_group(&self, counts: &CsrRows<'_>, coords: Option<&[[f32; 2]]>) -> Result<Vec<f32>> {
        let Some(host) = &self.host else {
            return Ok(to_vec(self.model.embed_group(counts, coords)?));
        };
        self.model.check_group(counts)?;
        // Concurrent callers (rare) get fresh buffers rather than waiting for the shared ones.
        let mut fresh = LayerScratch::default();
        let mut shared = self.scratch.try_lock().ok();
        let scratch = shared.as_deref_mut().unwrap_or(&mut fresh);
        host.embed(self.model, counts, coords, scratch)
    }
}
