//! Model configuration, mirroring the keys of the published CellPLM `config.json` files
//! (`{prefix}.config.json` next to `{prefix}.best.ckpt`). Keys of the published format that do
//! not affect the inference model (training schedule, masking rates, `ddp`, ...) are accepted and
//! ignored; three keys are ours: `positional_encoding`, `deterministic` and `normalize_total`.
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{CellPlmError, Result};

/// Latent layer kind (`latent_mod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LatentKind {
    /// Gaussian-mixture VAE (published 20230926 checkpoint; paper §3.3).
    Gmvae,
    /// Gaussian VAE (published 20231027 checkpoint).
    Vae,
    /// Plain linear bottleneck (published `ae`, `MergeLatentLayer`).
    Ae,
}

/// Decoder kind (`dec_mod`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DecoderKind {
    /// Batch-aware negative binomial decoder (published `nbmlp`).
    Nbmlp,
    /// The same hidden stack and covariates with a plain `Linear → ReLU` expression head
    /// (`decoder.out_layer.0.*`); note: not the published `mlp` layout, which concatenates
    /// one-hot covariates instead of adding covariate embeddings.
    Mlp,
}

/// Normalisation used by the embedder and the decoder (`norm`); encoder layers always use
/// LayerNorm, as in the published code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormChoice {
    /// GroupNorm with 4 groups (published).
    Groupnorm,
    /// LayerNorm.
    Layernorm,
}

fn d_enc_head() -> usize {
    8
}
fn d_qzyx() -> usize {
    512
}
fn d_true() -> bool {
    true
}
fn d_flow() -> String {
    "flowformer".into()
}

/// CellPLM configuration. Field names are those of the published `config.json`.
///
/// Defaults (used when a key is absent) are those of the published code and the 20230926_85M
/// checkpoint, except where noted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CellPlmConfig {
    /// Free-form model name (`name`; default none).
    #[serde(default)]
    pub name: Option<String>,
    /// Encoder kind (`enc_mod`); only `flowformer` is supported (default).
    #[serde(default = "d_flow")]
    pub enc_mod: String,
    /// Hidden size of embedder and encoder (`enc_hid`).
    pub enc_hid: usize,
    /// Number of encoder layers (`enc_layers`).
    pub enc_layers: usize,
    /// Attention heads (`enc_head`; default 8, the published code's default).
    #[serde(default = "d_enc_head")]
    pub enc_head: usize,
    /// Latent kind (`latent_mod`).
    pub latent_mod: LatentKind,
    /// Latent (embedding) dimension (`post_latent_dim`).
    pub post_latent_dim: usize,
    /// GMVAE mixture components (`num_clusters`; default 16).
    #[serde(default = "d_clusters")]
    pub num_clusters: usize,
    /// Floor λ of the GMVAE loss terms (`lamda`; default 5).
    #[serde(default = "d_five")]
    pub lamda: f64,
    /// Weight of the GMVAE z term (`w_li`; default 5).
    #[serde(default = "d_five")]
    pub w_li: f64,
    /// Weight of the GMVAE cluster term (`w_en`; default 5).
    #[serde(default = "d_five")]
    pub w_en: f64,
    /// Hidden width of the GMVAE q(z|h,y) layer (hard-coded 512 in the published code; not a
    /// published config key; default 512).
    #[serde(default = "d_qzyx")]
    pub qzyx_hidden: usize,
    /// Decoder kind (`dec_mod`).
    pub dec_mod: DecoderKind,
    /// Decoder hidden size (`dec_hid`).
    pub dec_hid: usize,
    /// Decoder layers (`dec_layers`): `dec_layers − 1` hidden layers plus the head.
    pub dec_layers: usize,
    /// Dropout everywhere (`model_dropout`; default 0.2; inactive at inference).
    #[serde(default = "d_dropout")]
    pub model_dropout: f64,
    /// Norm of embedder and decoder (`norm`; default groupnorm).
    #[serde(default = "d_norm")]
    pub norm: NormChoice,
    /// Number of genes of the decoder output (`out_dim`); must equal `gene_list.len()`.
    pub out_dim: usize,
    /// Size of the batch covariate table (`batch_num`; default 0 = no batch covariate).
    #[serde(default)]
    pub batch_num: usize,
    /// Size of the dataset covariate table (`dataset_num`; default 0).
    #[serde(default)]
    pub dataset_num: usize,
    /// Concatenate instead of add the positional encoding (`cat_pe`); only `false` is supported.
    #[serde(default)]
    pub cat_pe: bool,
    /// Gene vocabulary (`gene_list`): the order of rows of the gene embedding and of the decoder
    /// output.
    pub gene_list: Vec<String>,
    /// Our key: add the 2-D sinusoidal spatial positional encoding (paper appendix B), with a
    /// learned placeholder for cells without coordinates. Absent from published configs, whose
    /// models run with pe = 0: default `false` when parsing; the presets set it to `true`.
    #[serde(default)]
    pub positional_encoding: bool,
    /// Our key: deterministic inference (GMVAE y = argmax, z = mean; VAE z = mean). Default
    /// `true`; `false` samples as the published code does.
    #[serde(default = "d_true")]
    pub deterministic: bool,
    /// Our key: scale each cell's counts to this total before `log1p` in the embedder (the
    /// paper's §3.2 preprocessing; the published code embeds raw counts: `null`, the default when
    /// parsing). Models pretrained by sclm use 10,000: without it the embedder input is dominated
    /// by sequencing depth.
    #[serde(default)]
    pub normalize_total: Option<f64>,
}

fn d_clusters() -> usize {
    16
}
fn d_five() -> f64 {
    5.0
}
fn d_dropout() -> f64 {
    0.2
}
fn d_norm() -> NormChoice {
    NormChoice::Groupnorm
}

/// Largest hidden or latent width (`enc_hid`, `dec_hid`, `post_latent_dim`, `qzyx_hidden`) and
/// number of GMVAE components (`num_clusters`): 65,536 (the published model uses 1,024).
pub const MAX_WIDTH: usize = 1 << 16;
/// Largest number of encoder or decoder layers (`enc_layers`, `dec_layers`).
pub const MAX_LAYERS: usize = 1024;
/// Largest gene vocabulary (`gene_list`, `out_dim`): 4,194,304 (the published model has 19,374).
pub const MAX_GENES: usize = 1 << 22;
/// Largest covariate table (`batch_num`, `dataset_num`): 16,777,216 (published: 12,596 and 484).
pub const MAX_COVARIATES: usize = 1 << 24;
/// Largest number of parameters a configuration may describe: 2^34 (17,179,869,184; 64 GiB of
/// `f32`). The published 85M model has about 85 million.
pub const MAX_PARAMS: u128 = 1 << 34;

impl CellPlmConfig {
    /// The published 20230926_85M architecture (Flowformer 1024 × 4 layers × 8 heads, GMVAE with
    /// 16 components and latent 512, NB decoder 1024, batch table 12,596, dataset table 484) over
    /// the given vocabulary (19,374 genes in the published model), with our defaults for new
    /// models (positional encoding on, deterministic inference).
    pub fn published_85m(gene_list: Vec<String>) -> Self {
        CellPlmConfig {
            name: Some("cellplm_85m".into()),
            enc_mod: d_flow(),
            enc_hid: 1024,
            enc_layers: 4,
            enc_head: 8,
            latent_mod: LatentKind::Gmvae,
            post_latent_dim: 512,
            num_clusters: 16,
            lamda: 5.0,
            w_li: 5.0,
            w_en: 5.0,
            qzyx_hidden: 512,
            dec_mod: DecoderKind::Nbmlp,
            dec_hid: 1024,
            dec_layers: 2,
            model_dropout: 0.2,
            norm: NormChoice::Groupnorm,
            out_dim: gene_list.len(),
            batch_num: 12_596,
            dataset_num: 484,
            cat_pe: false,
            gene_list,
            positional_encoding: true,
            deterministic: true,
            normalize_total: None,
        }
    }

    /// A small model for CPU work: hidden 256, 2 layers, 8 heads, decoder 256, latent 64, no
    /// covariate tables (pretraining sizes them from the data), positional encoding on, input
    /// normalised to 10,000 counts per cell, no dropout, and a plain linear latent (`ae`).
    ///
    /// Why not the published GMVAE: on a simulated 2,000-cell tissue, 40 epochs of pretraining
    /// (about a minute on 2 cores) gave Leiden NMI 0.13 with the published GMVAE weights
    /// (`w_li = w_en = 5`, floor `lamda = 5`) against 0.61 with this latent. With a
    /// near-uniform q(y|x) every cell takes the same arg-max cluster, and each step whose
    /// Gaussian term exceeds the 5-nat floor pulls all cells' z towards that cluster's prior mean
    /// with weight 5, so the encoder collapses. With `w_li = w_en = 0.05` the GMVAE learns (NMI
    /// 0.43 after 30 epochs), still behind the plain latent. Dropout 0.2 also slowed learning (NMI
    /// 0.35 vs 0.45 after 15 epochs). The GMVAE stays available (`latent_mod: gmvae`, the 85M
    /// preset).
    pub fn small(gene_list: Vec<String>) -> Self {
        CellPlmConfig {
            name: Some("cellplm_small".into()),
            enc_hid: 256,
            enc_layers: 2,
            latent_mod: LatentKind::Ae,
            post_latent_dim: 64,
            qzyx_hidden: 256,
            dec_hid: 256,
            batch_num: 0,
            dataset_num: 0,
            model_dropout: 0.0,
            normalize_total: Some(1e4),
            ..Self::published_85m(gene_list)
        }
    }

    /// Parses a config from JSON text (published format; unknown keys ignored) and validates it.
    pub fn from_json_str(text: &str) -> Result<Self> {
        let c: CellPlmConfig = serde_json::from_str(text)
            .map_err(|e| CellPlmError::Json { path: "<string>".into(), message: e.to_string() })?;
        c.validate()?;
        Ok(c)
    }

    /// Reads and validates a config file (published `{prefix}.config.json` or our `config.json`).
    pub fn from_json_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| CellPlmError::io(path, e))?;
        let c: CellPlmConfig = serde_json::from_str(&text)
            .map_err(|e| CellPlmError::Json { path: path.display().to_string(), message: e.to_string() })?;
        c.validate().map_err(|e| match e {
            CellPlmError::Config(m) => CellPlmError::Config(format!("{}: {m}", path.display())),
            other => other,
        })?;
        Ok(c)
    }

    /// Number of genes of the vocabulary.
    pub fn n_genes(&self) -> usize {
        self.gene_list.len()
    }

    /// The parameters of the model this configuration describes, by part (name of the part,
    /// count), computed without overflow (saturating at `u128::MAX`) and without building
    /// anything. Counts are those of [`crate::CellPlm::new`] up to a few bias and norm vectors.
    pub fn param_parts(&self) -> Vec<(String, u128)> {
        let u = |v: usize| v as u128;
        let mul = |a: u128, b: u128| a.saturating_mul(b);
        let (h, g, dz, dh) = (u(self.enc_hid), u(self.gene_list.len()), u(self.post_latent_dim), u(self.dec_hid));
        let (k, q, b, d) = (u(self.num_clusters), u(self.qzyx_hidden), u(self.batch_num), u(self.dataset_num));
        let dec_hidden = u(self.dec_layers.saturating_sub(1));
        let mut parts = vec![
            (format!("gene embedding (gene_list {} x enc_hid {})", self.gene_list.len(), self.enc_hid), mul(g, h)),
            (format!("embedder (enc_hid {0} x enc_hid {0})", self.enc_hid), mul(h, h).saturating_add(mul(5, h))),
            (
                format!("encoder (enc_layers {} x 8 x enc_hid {}^2)", self.enc_layers, self.enc_hid),
                mul(u(self.enc_layers), mul(8, mul(h, h)).saturating_add(mul(11, h))),
            ),
        ];
        let latent = match self.latent_mod {
            LatentKind::Gmvae => mul(h, k)
                .saturating_add(mul(h.saturating_add(k), q))
                .saturating_add(mul(2, mul(q, dz)))
                .saturating_add(mul(2, mul(k, dz)))
                .saturating_add(mul(4, dz).saturating_add(k).saturating_add(q)),
            LatentKind::Vae => mul(2, mul(h, dz).saturating_add(dz)),
            LatentKind::Ae => mul(h, dz).saturating_add(dz),
        };
        parts.push((format!("latent (enc_hid {} x post_latent_dim {})", self.enc_hid, self.post_latent_dim), latent));
        parts.push((
            format!("decoder layers (dec_layers {} x dec_hid {}^2)", self.dec_layers, self.dec_hid),
            mul(dz, dh)
                .saturating_add(mul(dec_hidden.saturating_sub(1), mul(dh, dh)))
                .saturating_add(mul(dec_hidden, mul(3, dh).saturating_add(1))),
        ));
        if b.saturating_add(d) > 0 {
            parts.push((
                format!(
                    "covariate tables ((batch_num {} + dataset_num {}) x dec_hid {} x {} layers)",
                    self.batch_num, self.dataset_num, self.dec_hid, dec_hidden
                ),
                mul(dec_hidden, mul(b.saturating_add(d), dh).saturating_add(mul(6, dh))),
            ));
        }
        let head = match self.dec_mod {
            DecoderKind::Nbmlp => mul(dh, 128).saturating_add(mul(130, g)).saturating_add(128),
            DecoderKind::Mlp => mul(dh, g).saturating_add(g),
        };
        parts.push((format!("decoder head (dec_hid {} x gene_list {})", self.dec_hid, self.gene_list.len()), head));
        parts
    }

    /// Checks that the configuration describes a model this crate can build, before anything is
    /// allocated: every size within its bound ([`MAX_WIDTH`], [`MAX_LAYERS`], [`MAX_GENES`],
    /// [`MAX_COVARIATES`]), the whole model within [`MAX_PARAMS`] parameters, and the structural
    /// constraints of the architecture. Errors name the key and its value.
    pub fn validate(&self) -> Result<()> {
        let err = |m: String| Err(CellPlmError::Config(m));
        for (key, v, max) in [
            ("enc_hid", self.enc_hid, MAX_WIDTH),
            ("enc_head", self.enc_head, MAX_WIDTH),
            ("post_latent_dim", self.post_latent_dim, MAX_WIDTH),
            ("qzyx_hidden", self.qzyx_hidden, MAX_WIDTH),
            ("num_clusters", self.num_clusters, MAX_WIDTH),
            ("dec_hid", self.dec_hid, MAX_WIDTH),
            ("enc_layers", self.enc_layers, MAX_LAYERS),
            ("dec_layers", self.dec_layers, MAX_LAYERS),
            ("out_dim", self.out_dim, MAX_GENES),
            ("gene_list", self.gene_list.len(), MAX_GENES),
            ("batch_num", self.batch_num, MAX_COVARIATES),
            ("dataset_num", self.dataset_num, MAX_COVARIATES),
        ] {
            if v > max {
                let what = if key == "gene_list" { format!("gene_list has {v} genes") } else { format!("{key} = {v}") };
                return err(format!("{what}, more than the {max} supported"));
            }
        }
        let parts = self.param_parts();
        let total = parts.iter().fold(0u128, |a, (_, n)| a.saturating_add(*n));
        if total > MAX_PARAMS {
            let (name, n) = parts.iter().max_by_key(|(_, n)| *n).cloned().unwrap_or_default();
            return err(format!(
                "the model would have about {total} parameters, more than the {MAX_PARAMS} (2^34) supported; the largest part is the {name}: {n}"
            ));
        }
        if let Some(t) = self.normalize_total {
            if !(t.is_finite() && t > 0.0) {
                return err(format!("normalize_total = {t} must be finite and positive (or null)"));
            }
        }
        for (key, v) in [("lamda", self.lamda), ("w_li", self.w_li), ("w_en", self.w_en)] {
            if !v.is_finite() {
                return err(format!("{key} = {v} must be finite"));
            }
        }
        if self.enc_mod != "flowformer" {
            return err(format!("enc_mod '{}' is not supported (only 'flowformer')", self.enc_mod));
        }
        if self.cat_pe {
            return err("cat_pe = true is not supported".into());
        }
        if self.gene_list.is_empty() {
            return err("gene_list is empty".into());
        }
        if self.out_dim != self.gene_list.len() {
            return err(format!(
                "out_dim {} differs from the {} genes of gene_list",
                self.out_dim,
                self.gene_list.len()
            ));
        }
        if self.enc_hid == 0 || self.enc_head == 0 || !self.enc_hid.is_multiple_of(self.enc_head) {
            return err(format!("enc_hid {} must be a positive multiple of enc_head {}", self.enc_hid, self.enc_head));
        }
        if !self.enc_hid.is_multiple_of(4) || !self.dec_hid.is_multiple_of(4) {
            return err("enc_hid and dec_hid must be multiples of 4 (GroupNorm with 4 groups, 2-D encoding)".into());
        }
        if self.dec_layers < 2 {
            return err(format!("dec_layers must be at least 2, got {}", self.dec_layers));
        }
        if self.post_latent_dim == 0 || self.enc_layers == 0 {
            return err("post_latent_dim and enc_layers must be positive".into());
        }
        if self.latent_mod == LatentKind::Gmvae && (self.num_clusters == 0 || self.qzyx_hidden == 0) {
            return err("num_clusters and qzyx_hidden must be positive for a gmvae latent".into());
        }
        if !(0.0..1.0).contains(&self.model_dropout) {
            return err(format!("model_dropout must be in [0, 1), got {}", self.model_dropout));
        }
        Ok(())
    }

    /// JSON text of the configuration (our `config.json`, a superset of the published keys we use).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("config serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_published_config_and_ignores_unknown_keys() {
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/bench/cellplm_20230926_85M.config.json");
        let Ok(c) = CellPlmConfig::from_json_file(p) else {
            // The shared bench directory is outside the repository; the fixture configs are checked below.
            return;
        };
        assert_eq!(c.enc_hid, 1024);
        assert_eq!(c.enc_head, 8);
        assert_eq!(c.latent_mod, LatentKind::Gmvae);
        assert_eq!(c.gene_list.len(), 19_374);
        assert_eq!(c.batch_num, 12_596);
        assert!(!c.positional_encoding);
        assert!(c.deterministic);
    }

    #[test]
    fn parses_fixture_configs() {
        for (name, kind) in [("gmvae", LatentKind::Gmvae), ("vae", LatentKind::Vae), ("ae", LatentKind::Ae)] {
            let p = format!("{}/../../fixtures/cellplm/cellplm_small_{name}.config.json", env!("CARGO_MANIFEST_DIR"));
            let c = CellPlmConfig::from_json_file(&p).unwrap();
            assert_eq!(c.latent_mod, kind);
            assert_eq!((c.enc_hid, c.enc_head, c.out_dim, c.n_genes()), (32, 4, 60, 60));
            assert!(!c.positional_encoding);
        }
    }

    #[test]
    fn rejects_bad_configs_and_round_trips() {
        let genes: Vec<String> = (0..8).map(|i| format!("G{i}")).collect();
        let c = CellPlmConfig::small(genes);
        c.validate().unwrap();
        assert!(c.positional_encoding);
        let back = CellPlmConfig::from_json_str(&c.to_json()).unwrap();
        assert_eq!(back, c);
        let mut bad = c.clone();
        bad.out_dim = 7;
        assert!(bad.validate().is_err());
        let mut bad = c.clone();
        bad.enc_mod = "performer".into();
        assert!(bad.validate().unwrap_err().to_string().contains("performer"));
        assert!(CellPlmConfig::from_json_str("{\"enc_hid\": 3}").is_err());
    }

    fn genes(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("g{i}")).collect()
    }

    fn config_err(c: &CellPlmConfig) -> String {
        let e = c.validate().unwrap_err().to_string();
        assert!(!e.contains('\n'), "{e}");
        e
    }

    #[test]
    fn published_sizes_stay_valid() {
        let c = CellPlmConfig::published_85m(genes(19_374));
        c.validate().unwrap();
        let total: u128 = c.param_parts().iter().map(|(_, n)| n).sum();
        assert!((60_000_000..100_000_000).contains(&total), "85M model estimated at {total} parameters");
        // A larger variant (6 layers, 16 heads, 24,000 genes) and the small preset are valid too.
        let big = CellPlmConfig { enc_layers: 6, enc_head: 16, ..CellPlmConfig::published_85m(genes(24_000)) };
        big.validate().unwrap();
        CellPlmConfig::small(genes(24_000)).validate().unwrap();
        // The published config file, when the shared bench directory is there.
        let p = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/bench/cellplm_20230926_85M.config.json");
        if Path::new(p).exists() {
            CellPlmConfig::from_json_file(p).unwrap();
        }
        // Every bound itself is allowed (one at a time).
        let base = CellPlmConfig::small(genes(100));
        for c in [
            CellPlmConfig { enc_layers: MAX_LAYERS, ..base.clone() },
            CellPlmConfig { dec_layers: MAX_LAYERS, ..base.clone() },
            CellPlmConfig { batch_num: MAX_COVARIATES, dec_hid: 256, ..base.clone() },
            CellPlmConfig { post_latent_dim: MAX_WIDTH, ..base.clone() },
        ] {
            c.validate().unwrap();
        }
    }

    #[test]
    fn absurd_sizes_are_refused_naming_key_and_value() {
        let base = CellPlmConfig::small(genes(100));
        for (c, must) in [
            (
                CellPlmConfig { enc_hid: 1_000_000_000_000, ..base.clone() },
                "enc_hid = 1000000000000, more than the 65536",
            ),
            (CellPlmConfig { enc_head: 1 << 20, ..base.clone() }, "enc_head = 1048576"),
            (
                CellPlmConfig { enc_layers: 1_000_000_000, ..base.clone() },
                "enc_layers = 1000000000, more than the 1024",
            ),
            (CellPlmConfig { post_latent_dim: usize::MAX, ..base.clone() }, "post_latent_dim = 18446744073709551615"),
            (CellPlmConfig { qzyx_hidden: 1 << 40, ..base.clone() }, "qzyx_hidden = 1099511627776"),
            (CellPlmConfig { num_clusters: 1 << 30, ..base.clone() }, "num_clusters = 1073741824"),
            (CellPlmConfig { dec_hid: 1 << 32, ..base.clone() }, "dec_hid = 4294967296"),
            (CellPlmConfig { dec_layers: usize::MAX, ..base.clone() }, "dec_layers = 18446744073709551615"),
            (CellPlmConfig { batch_num: 1 << 40, ..base.clone() }, "batch_num = 1099511627776, more than the 16777216"),
            (CellPlmConfig { dataset_num: usize::MAX, ..base.clone() }, "dataset_num = 18446744073709551615"),
            (CellPlmConfig { out_dim: 1 << 40, ..base.clone() }, "out_dim = 1099511627776, more than the 4194304"),
            (CellPlmConfig { normalize_total: Some(-1.0), ..base.clone() }, "normalize_total = -1"),
            (CellPlmConfig { lamda: f64::NAN, ..base.clone() }, "lamda = NaN"),
        ] {
            let e = config_err(&c);
            assert!(e.contains(must), "'{e}' should mention '{must}'");
        }
    }

    #[test]
    fn products_beyond_2_pow_34_parameters_are_refused() {
        // Each size within its bound, but gene_list x enc_hid alone is 1.8e10 > 2^34.
        let c = CellPlmConfig { enc_hid: 16_384, enc_layers: 1, ..CellPlmConfig::small(genes(1_100_000)) };
        let e = config_err(&c);
        assert!(
            e.contains("parameters, more than the 17179869184 (2^34) supported")
                && e.contains("gene embedding (gene_list 1100000 x enc_hid 16384): 18022400000"),
            "{e}"
        );
        // The encoder: 1024 layers of width 8192.
        let c = CellPlmConfig { enc_hid: 8192, enc_layers: 1024, ..CellPlmConfig::small(genes(10)) };
        assert!(config_err(&c).contains("encoder (enc_layers 1024 x 8 x enc_hid 8192^2)"));
        // Covariate tables: 2^24 batches x 65536 wide x 3 decoder layers.
        let c = CellPlmConfig {
            batch_num: MAX_COVARIATES,
            dec_hid: MAX_WIDTH,
            dec_layers: 4,
            ..CellPlmConfig::small(genes(10))
        };
        assert!(config_err(&c)
            .contains("covariate tables ((batch_num 16777216 + dataset_num 0) x dec_hid 65536 x 3 layers)"));
    }

    #[test]
    fn json_loading_and_model_construction_validate_first() {
        let small = CellPlmConfig::small(genes(8));
        let mut v: serde_json::Value = serde_json::from_str(&small.to_json()).unwrap();
        v["enc_hid"] = serde_json::json!(1_000_000_000_000u64);
        let e = CellPlmConfig::from_json_str(&v.to_string()).unwrap_err().to_string();
        assert!(e.contains("enc_hid = 1000000000000"), "{e}");
        // A model directory whose config.json asks for an absurd size is refused before any
        // weight is read or allocated.
        let dir = tempfile::tempdir().unwrap();
        let mdir = dir.path().join("model");
        let mut m = crate::test_support::tiny_model(1);
        m.save_dir(&mdir).unwrap();
        let mut v: serde_json::Value = serde_json::from_str(&m.config().to_json()).unwrap();
        v["enc_hid"] = serde_json::json!(1_000_000_000_000u64);
        let p = mdir.join("config.json");
        std::fs::write(&p, v.to_string()).unwrap();
        let e = CellPlmConfig::from_json_file(&p).unwrap_err().to_string();
        assert!(e.contains("config.json: enc_hid = 1000000000000, more than the 65536 supported"), "{e}");
        assert_eq!(e.matches("invalid CellPLM configuration").count(), 1, "{e}");
        let e =
            crate::CellPlm::load_dir(&mdir, &sclm_nn::cpu_device()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("config.json") && e.contains("enc_hid = 1000000000000"), "{e}");
        // Building a model validates too.
        let bad = CellPlmConfig { enc_hid: 1_000_000_000_000, ..small };
        let e = crate::CellPlm::new(&bad, &sclm_nn::cpu_device()).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("enc_hid = 1000000000000"), "{e}");
    }
}
