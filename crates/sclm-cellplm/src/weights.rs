//! Weights: one declarative table maps every parameter of [`CellPlm`] to its name and layout in
//! the published PyTorch state dict (torch `Linear.weight` is `[out, in]`, burn's is `[in, out]`:
//! those entries are transposed). The same table serves importing published checkpoints
//! ([`CellPlm::load_torch`], [`CellPlm::from_state_dict`]) and our own model directory
//! ([`CellPlm::save_dir`], [`CellPlm::load_dir`]), whose `model.safetensors` uses the published
//! names and layouts. The trainer's `checkpoint/` and `best/` use them too
//! ([`CellPlm::name_table`], [`classifier_name_table`], through `Trainable::weight_naming`).
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use burn::prelude::*;
use sclm_model::{ClassifierHead, Manifest, ModelKind};
use sclm_nn::attention::Attention;
use sclm_nn::burn;
use sclm_nn::remap::{self, layer_norm, linear, norm, Slot, Slots};
use sclm_nn::train::optim::param_paths;
use sclm_nn::train::{NameEntry, NameTable, WeightNaming};
use sclm_weights::{LoadReport, StateDict, TensorData, TensorLoader};

use crate::annotate::CellPlmClassifier;
use crate::config::CellPlmConfig;
use crate::error::{CellPlmError, Result};
use crate::model::{CellPlm, DecoderHead, Latent, NbHead};

type Table<'a> = Slots<'a>;

impl CellPlm {
    /// The remap table: every parameter with its published state-dict name.
    fn slots(&mut self) -> Table<'_> {
        let mut t: Table<'_> = Vec::new();
        let e = &mut self.embedder;
        t.push(("embedder.feat_enc.emb".into(), Slot::Mat(&mut e.feat_enc.emb, false)));
        linear(&mut t, "embedder.extra_linear.0", &mut e.linear);
        norm(&mut t, "embedder.extra_linear.3", &mut e.norm);
        if let Some(m) = e.missing_pe.as_mut() {
            t.push(("embedder.pe_enc.missing_pe".into(), Slot::Vec1(m)));
        }
        for (i, l) in self.encoder.iter_mut().enumerate() {
            let p = format!("encoder.layers.{i}");
            match &mut l.self_attn {
                Attention::Flow(a) => {
                    linear(&mut t, &format!("{p}.self_attn.query_projection"), &mut a.query_projection);
                    linear(&mut t, &format!("{p}.self_attn.key_projection"), &mut a.key_projection);
                    linear(&mut t, &format!("{p}.self_attn.value_projection"), &mut a.value_projection);
                    linear(&mut t, &format!("{p}.self_attn.out_projection"), &mut a.out_projection);
                }
                // The constructor only builds Flowformer layers.
                _ => unreachable!("CellPLM encoder layers use Flowformer attention"),
            }
            linear(&mut t, &format!("{p}._ff_block.0"), &mut l.ff_in);
            linear(&mut t, &format!("{p}._ff_block.3"), &mut l.ff_out);
            norm(&mut t, &format!("{p}.norm1"), &mut l.norm1);
            norm(&mut t, &format!("{p}.norm2"), &mut l.norm2);
        }
        layer_norm(&mut t, "pre_latent_norm.norm", &mut self.pre_latent_norm);
        match &mut self.latent {
            Latent::Gmvae(g) => {
                let p = "latent.layers.1.inference";
                linear(&mut t, &format!("{p}.inference_qyx.0.logits"), &mut g.logits);
                linear(&mut t, &format!("{p}.inference_qzyx.0"), &mut g.qzyx_hidden);
                linear(&mut t, &format!("{p}.inference_qzyx.2.mu"), &mut g.qzyx_mu);
                linear(&mut t, &format!("{p}.inference_qzyx.2.var"), &mut g.qzyx_var);
                linear(&mut t, &format!("{p}.y_mu"), &mut g.y_mu);
                linear(&mut t, &format!("{p}.y_var"), &mut g.y_var);
            }
            Latent::Vae(v) => {
                linear(&mut t, "latent.layers.1.hid_2mu", &mut v.mu);
                linear(&mut t, "latent.layers.1.hid_2sigma", &mut v.sigma);
            }
            Latent::Ae(a) => linear(&mut t, "latent.layers.1.lat_2lat.0", &mut a.linear),
        }
        let d = &mut self.decoder;
        for (i, l) in d.layers.iter_mut().enumerate() {
            linear(&mut t, &format!("decoder.layers.{i}.0"), &mut l.linear);
            t.push((format!("decoder.layers.{i}.1.weight"), Slot::Vec1(&mut l.prelu)));
            norm(&mut t, &format!("decoder.layers.{i}.3"), &mut l.norm);
        }
        for (i, c) in d.covariate_layers.iter_mut().enumerate() {
            for (name, cov) in [("batch", c.batch.as_mut()), ("dataset", c.dataset.as_mut())] {
                if let Some(cov) = cov {
                    let p = format!("decoder.covariate_layers.{i}.{name}");
                    t.push((format!("{p}.0.weight"), Slot::Mat(&mut cov.table, false)));
                    t.push((format!("{p}.1.weight"), Slot::Vec1(&mut cov.prelu)));
                    norm(&mut t, &format!("{p}.2"), &mut cov.norm);
                }
            }
        }
        match &mut d.head {
            DecoderHead::Nb(NbHead { dec_1, dec_mean, dec_disp }) => {
                t.push(("decoder.out_layer.dec_disp".into(), Slot::Vec1(dec_disp)));
                linear(&mut t, "decoder.out_layer.dec_1", dec_1);
                linear(&mut t, "decoder.out_layer.dec_mean.0", dec_mean);
            }
            DecoderHead::Mlp(out) => linear(&mut t, "decoder.out_layer.0", out),
        }
        t
    }

    /// The published state-dict name and layout of every parameter, keyed by its module path
    /// as the trainer's checkpoints spell it ([`param_paths`]: enum variant names skipped, `Vec`
    /// elements numbered, e.g. `encoder.0.self_attn.query_projection.weight`) with
    /// `module_prefix` in front (`""`, or `"plm."` for a model that nests the CellPLM in a
    /// field `plm`). Published names are never prefixed: they are those of
    /// [`CellPlm::expected_tensors`]. Each entry of the remap table (the one behind
    /// [`CellPlm::to_state_dict`]) is matched to its module path through the parameter's id.
    /// Cheap: a clone of the module (shared tensors) and one visit.
    pub fn name_entries(&self, module_prefix: &str) -> Result<Vec<NameEntry>> {
        // `slots` borrows mutably; a clone shares the parameters and their ids.
        let mut probe = self.clone();
        Ok(remap::name_entries(self, &probe.slots(), module_prefix)?)
    }

    /// The [`NameTable`] of [`CellPlm::name_entries`]: how the trainer names and lays out this
    /// model's weights in `checkpoint/` and `best/` (the published names and layouts).
    pub fn name_table(&self, module_prefix: &str) -> Result<NameTable> {
        Ok(NameTable::new(self.name_entries(module_prefix)?)?)
    }

    /// The state-dict names and shapes (published layout) this model expects.
    pub fn expected_tensors(&mut self) -> Vec<(String, Vec<usize>)> {
        self.slots().iter().map(|(k, s)| (k.clone(), s.torch_shape())).collect()
    }

    /// Builds a model from `config` and takes its weights from a state dict with the published
    /// names (`path` only names the source in messages). Every expected tensor must be present
    /// with its shape, otherwise the error lists what is missing or mismatched; tensors the
    /// model does not use (`embedder.norm0.*`, `embedder.pe_enc.*` when the positional encoding
    /// is off, ...) are reported as skipped.
    pub fn from_state_dict(
        config: &CellPlmConfig,
        sd: StateDict,
        path: impl AsRef<Path>,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let mut model = CellPlm::new(config, device)?;
        let mut loader = TensorLoader::new(path.as_ref(), sd);
        for (key, mut slot) in model.slots() {
            let shape = slot.torch_shape();
            if let Some(v) = loader.take_f32(&key, &shape) {
                slot.set(v, device);
            }
        }
        let report = loader.finish_complete()?;
        Ok((model, report))
    }

    /// Imports a published checkpoint (`{prefix}.best.ckpt`, the dictionary `model_state_dict`;
    /// or a `.safetensors` file holding the same state dict) with its config (`{prefix}.config.json`, see [`CellPlmConfig::from_json_file`]).
    /// Published configs leave the positional encoding off (pe = 0), as the published model runs.
    pub fn load_torch(
        ckpt_path: impl AsRef<Path>,
        config: &CellPlmConfig,
        device: &Device,
    ) -> Result<(Self, LoadReport)> {
        let path = ckpt_path.as_ref();
        // A safetensors export of the state dict holds the tensors at the top level.
        let sd = if path.extension().is_some_and(|e| e == "safetensors") {
            sclm_weights::read_safetensors(path)?
        } else {
            sclm_weights::read_weights(path, "model_state_dict")?
        };
        Self::from_state_dict(config, sd, path, device)
    }

    /// All weights as a state dict with the published names and layouts.
    pub fn to_state_dict(&mut self) -> Result<StateDict> {
        let mut sd = StateDict::new();
        for (key, slot) in self.slots() {
            let t = TensorData::from_f32(slot.torch_shape(), slot.get())?;
            sd.insert(key, t);
        }
        Ok(sd)
    }

    /// Saves the model as a self-describing directory: `model.json` (manifest: family
    /// `cellplm`, format version, `registry`), `config.json`, `model.safetensors` (published
    /// names), `genes.txt` (vocabulary, one per line). Atomic: written to a temporary sibling
    /// directory, then renamed over `dir` (an existing model directory there is replaced).
    pub fn save_dir(&mut self, dir: impl AsRef<Path>) -> Result<()> {
        self.save_dir_with(dir, &Preprocessing::default())
    }

    /// [`CellPlm::save_dir`] with the given registry (covariate labels, group key, gene id kind).
    pub fn save_dir_with(&mut self, dir: impl AsRef<Path>, pre: &Preprocessing) -> Result<()> {
        let manifest = Manifest::new(crate::family::NAME, ModelKind::Pretrained, pre.clone());
        sclm_model::save_atomic(dir, |tmp| self.write_files(tmp, &manifest).map_err(Into::into))?;
        Ok(())
    }

    /// Writes the files of a model directory into the existing directory `dir` (not atomic:
    /// see [`CellPlm::save_dir`]).
    pub fn write_files(&mut self, dir: &Path, manifest: &Manifest) -> Result<()> {
        sclm_model::dir::write_text(dir, "model.json", &manifest.to_json())?;
        sclm_model::dir::write_text(dir, "config.json", &self.config().to_json())?;
        sclm_model::dir::write_text(dir, "genes.txt", &(self.genes().join("\n") + "\n"))?;
        let sd = self.to_state_dict()?;
        let mut meta = HashMap::new();
        meta.insert("format".to_string(), "sclm-cellplm".to_string());
        sclm_weights::write_safetensors(dir.join("model.safetensors"), &sd, Some(meta))?;
        Ok(())
    }

    /// Loads a directory written by [`CellPlm::save_dir`] (or by sclm before manifests existed):
    /// returns the model and its registry. Checks that `genes.txt` agrees with the config's
    /// `gene_list` and that the weights are complete.
    pub fn load_dir(dir: impl AsRef<Path>, device: &Device) -> Result<(Self, Preprocessing)> {
        let dir = dir.as_ref();
        let manifest = sclm_model::read_manifest(dir)?;
        if manifest.family != crate::family::NAME {
            return Err(CellPlmError::Config(format!(
                "{}: a {} model, not a CellPLM model",
                dir.display(),
                manifest.family
            )));
        }
        Ok((Self::load_files(dir, device)?, manifest.registry))
    }

    /// The model of the files `config.json`, `genes.txt` and `model.safetensors` of `dir`, on
    /// `device`.
    pub fn load_files(dir: &Path, device: &Device) -> Result<Self> {
        let config = CellPlmConfig::from_json_file(dir.join("config.json"))?;
        let gpath = dir.join("genes.txt");
        let genes = sclm_model::dir::read_genes(dir)?;
        if genes != config.gene_list {
            return Err(CellPlmError::Config(format!(
                "{} ({} genes) disagrees with gene_list of config.json ({} genes)",
                gpath.display(),
                genes.len(),
                config.gene_list.len()
            )));
        }
        let wpath = dir.join("model.safetensors");
        let sd = sclm_weights::read_safetensors(&wpath)?;
        let (model, report) = Self::from_state_dict(&config, sd, &wpath, device)?;
        if !report.skipped.is_empty() {
            return Err(CellPlmError::Config(format!(
                "{} holds tensors the model does not use: {}",
                wpath.display(),
                report.skipped.iter().take(5).cloned().collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(model)
    }
}

/// The published names of a classifier head at module path `module_prefix` (e.g. `"head."`):
/// its `Linear` as `head.weight` (stored transposed, torch layout `[classes, latent]`) and
/// `head.bias`, as in `head.safetensors` of [`CellPlmClassifier::save_dir`].
pub fn classifier_head_entries(head: &ClassifierHead, module_prefix: &str) -> Vec<NameEntry> {
    param_paths(head)
        .into_iter()
        .filter_map(|(path, _)| {
            let rest = path.strip_prefix("linear.")?.to_string();
            Some(NameEntry {
                module_path: format!("{module_prefix}{path}"),
                transposed: rest == "weight",
                published: format!("head.{rest}"),
            })
        })
        .collect()
}

/// The [`NameTable`] of a [`CellPlmClassifier`]: the backbone (`plm.` module paths) under the
/// published CellPLM names, the head as `head.weight` `[classes, latent]` and `head.bias`.
pub fn classifier_name_table(model: &CellPlmClassifier) -> Result<NameTable> {
    let mut entries = model.plm.name_entries("plm.")?;
    entries.extend(classifier_head_entries(&model.head, "head."));
    Ok(NameTable::new(entries)?)
}

/// A table as the trainer's weight naming ([`sclm_nn::train::Trainable::weight_naming`]). A
/// table that cannot be built (not expected: `tests/naming.rs` checks that every parameter has
/// one published name) leaves the trainer with module paths.
pub(crate) fn as_naming(table: Result<NameTable>) -> Option<Arc<dyn WeightNaming>> {
    table.ok().map(|t| Arc::new(t) as Arc<dyn WeightNaming>)
}

/// How input data must be prepared for the model: the model layer's registry (saved in
/// `model.json`; read from `preprocessing.json` in directories written before manifests).
pub type Preprocessing = sclm_model::Registry;
