//! Checkpoint files: `config.json`, `model.safetensors` (tensor names = module paths, enum
//! variant names skipped, e.g. `encoder.layers.0.self_attn.query_projection.weight`, or the
//! published names of a [`WeightNaming`]), `param_ids.json`, `optimizer.<group>.bpk` (burn's
//! burnpack optimiser records), `train_state.json` and, for steps with state,
//! `step_state.json` and `step_state.bpk`. Directories are written under a temporary name and
//! renamed into place.
use std::collections::HashMap;
use std::fs;
use std::path::Path;
use std::sync::Arc;

use burn::module::Module;
use burn::store::burn_pack::Tensor as PackTensor;
use burn::store::{bridge, ModuleAdapter, ModuleContext, ModuleSnapshot, ModuleStore, SafetensorsStore};
use burn::tensor::{DType, Shape, TensorData};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::NnError;

/// What loading weights into a module did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LoadReport {
    /// Tensors loaded.
    pub applied: Vec<String>,
    /// Module tensors absent from the file (left at their current values).
    pub missing: Vec<String>,
    /// File tensors the module has no place for (ignored).
    pub unused: Vec<String>,
    /// Tensors skipped because of errors such as shape mismatches, with the reason.
    pub errors: Vec<String>,
}

/// Saves a module's weights as safetensors (names = module paths).
pub fn save_model<M: Module>(model: &M, path: &Path) -> Result<(), NnError> {
    let mut store = SafetensorsStore::from_file(path).skip_enum_variants(true).overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|e| NnError::Store { path: path.display().to_string(), message: format!("{e:?}") })
}

/// Loads safetensors weights into `model` by name. Tensors missing from the file, extra tensors
/// and shape mismatches are reported, not fatal: callers decide (and must say what was skipped).
pub fn load_model<M: Module>(mut model: M, path: &Path) -> Result<(M, LoadReport), NnError> {
    if !path.exists() {
        return Err(NnError::Store { path: path.display().to_string(), message: "file not found".into() });
    }
    let mut store = SafetensorsStore::from_file(path).skip_enum_variants(true).allow_partial(true);
    let res = model
        .load_from(&mut store)
        .map_err(|e| NnError::Store { path: path.display().to_string(), message: format!("{e:?}") })?;
    let report = LoadReport {
        applied: res.applied,
        missing: res.missing.into_iter().map(|(p, _)| p).collect(),
        unused: res.unused,
        errors: res.errors.iter().map(|e| format!("{e:?}")).collect(),
    };
    Ok((model, report))
}

/// Copies the weights of `from` into `to` in memory, by module path (enum variant names
/// skipped), as [`load_model`] does from a file: tensors `to` lacks a place for, or whose
/// shapes differ, are reported, and `to` keeps its own values for them.
pub fn copy_weights<A: Module, B: Module>(from: &A, mut to: B) -> (B, LoadReport) {
    let res = to.apply(from.collect(None, None, true), None, None, true);
    let report = LoadReport {
        applied: res.applied,
        missing: res.missing.into_iter().map(|(p, _)| p).collect(),
        unused: res.unused,
        errors: res.errors.iter().map(|e| format!("{e:?}")).collect(),
    };
    (to, report)
}

/// How a model's weights are named and laid out in weight files: the published state-dict
/// keys of the family (e.g. PyTorch's), where module paths differ from them. Used by
/// [`save_model_named`] / [`load_model_named`], and by the trainer for `checkpoint/` and
/// `best/` when the model ([`Trainable::weight_naming`](super::Trainable::weight_naming)) or
/// the step ([`TrainStep::weight_naming`](super::TrainStep::weight_naming)) gives one.
pub trait WeightNaming: Send + Sync {
    /// The key under which the tensor at `module_path` is stored.
    fn published(&self, module_path: &str) -> String;
    /// The module path of the stored key `key`; `None` for a key the model has no place for
    /// (reported as unused).
    fn module_path(&self, key: &str) -> Option<String>;
    /// Whether the 2-D tensor at `module_path` is stored transposed (a PyTorch `Linear` weight
    /// is `[out, in]`, a burn one `[in, out]`). Default: no.
    fn transposed(&self, _module_path: &str) -> bool {
        false
    }
}

/// One row of a [`NameTable`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameEntry {
    /// Module path (enum variant names skipped).
    pub module_path: String,
    /// Published key.
    pub published: String,
    /// Stored transposed (2-D tensors only).
    #[serde(default)]
    pub transposed: bool,
}

/// A declarative [`WeightNaming`]: a table of module paths and their published keys; paths
/// not in the table keep their module path.
#[derive(Debug, Clone, Default)]
pub struct NameTable {
    by_path: HashMap<String, (String, bool)>,
    by_key: HashMap<String, String>,
}

impl NameTable {
    /// The table of `entries`; each module path and each published key must occur once.
    pub fn new(entries: impl IntoIterator<Item = NameEntry>) -> Result<Self, NnError> {
        let mut t = NameTable::default();
        for e in entries {
            if t.by_key.insert(e.published.clone(), e.module_path.clone()).is_some() {
                return Err(NnError::Config(format!("weight name table: key {} used twice", e.published)));
            }
            if t.by_path.insert(e.module_path.clone(), (e.published, e.transposed)).is_some() {
                return Err(NnError::Config(format!("weight name table: module path {} named twice", e.module_path)));
            }
        }
        Ok(t)
    }
}

impl WeightNaming for NameTable {
    fn published(&self, module_path: &str) -> String {
        self.by_path.get(module_path).map(|(k, _)| k.clone()).unwrap_or_else(|| module_path.to_string())
    }

    fn module_path(&self, key: &str) -> Option<String> {
        match self.by_key.get(key) {
            Some(p) => Some(p.clone()),
            // An unlisted key is a module path, unless that path is stored under another name.
            None => (!self.by_path.contains_key(key)).then(|| key.to_string()),
        }
    }

    fn transposed(&self, module_path: &str) -> bool {
        self.by_path.get(module_path).is_some_and(|(_, t)| *t)
    }
}

/// Swaps the two axes of 2-D float data.
fn transpose_2d(data: TensorData) -> TensorData {
    let dims = data.shape().as_slice().to_vec();
    let dtype = data.dtype();
    let es = dtype.size();
    if dims.len() != 2 || data.as_bytes().len() != dims[0] * dims[1] * es {
        return data;
    }
    let (a, b) = (dims[0], dims[1]);
    let src = data.as_bytes();
    let mut out = vec![0u8; src.len()];
    for i in 0..a {
        for j in 0..b {
            out[(j * a + i) * es..(j * a + i + 1) * es].copy_from_slice(&src[(i * b + j) * es..(i * b + j + 1) * es]);
        }
    }
    TensorData::from_bytes_vec(out, [b, a], dtype)
}

fn transposable(t: &PackTensor) -> bool {
    t.shape.num_dims() == 2 && matches!(t.dtype, DType::F64 | DType::F32 | DType::F16 | DType::BF16)
}

/// Renames (and transposes) tensors on their way into a file.
#[derive(Clone)]
struct Publish(Arc<dyn WeightNaming>);

impl ModuleAdapter for Publish {
    fn adapt(&self, tensor: PackTensor, _ctx: ModuleContext<'_>) -> PackTensor {
        let key = self.0.published(&tensor.name);
        if self.0.transposed(&tensor.name) && transposable(&tensor) {
            let dims = tensor.shape.as_slice().to_vec();
            let dtype = tensor.dtype;
            bridge::map_data(tensor, key, dtype, Shape::new([dims[1], dims[0]]), transpose_2d)
        } else {
            let mut tensor = tensor;
            tensor.name = key;
            tensor
        }
    }

    fn clone_box(&self) -> Box<dyn ModuleAdapter> {
        Box::new(self.clone())
    }
}

/// Saves `model`'s weights as safetensors under the names (and layout) of `naming`; without a
/// naming, as [`save_model`].
pub fn save_model_named<M: Module>(
    model: &M,
    path: &Path,
    naming: Option<&Arc<dyn WeightNaming>>,
) -> Result<(), NnError> {
    let Some(naming) = naming else { return save_model(model, path) };
    let mut store = SafetensorsStore::from_file(path)
        .skip_enum_variants(true)
        .overwrite(true)
        .with_to_adapter(Publish(naming.clone()));
    model
        .save_into(&mut store)
        .map_err(|e| NnError::Store { path: path.display().to_string(), message: format!("{e:?}") })
}

/// Loads safetensors weights stored under the names (and layout) of `naming` into `model`, as
/// [`load_model`] does (which it is without a naming): missing and unused tensors are reported
/// (unused ones under their stored keys); a tensor of the wrong shape is an error.
pub fn load_model_named<M: Module>(
    mut model: M,
    path: &Path,
    naming: Option<&Arc<dyn WeightNaming>>,
) -> Result<(M, LoadReport), NnError> {
    let Some(naming) = naming else { return load_model(model, path) };
    if !path.exists() {
        return Err(NnError::Store { path: path.display().to_string(), message: "file not found".into() });
    }
    let store_err = |message: String| NnError::Store { path: path.display().to_string(), message };
    let mut store = SafetensorsStore::from_file(path).skip_enum_variants(true);
    let stored: Vec<PackTensor> =
        store.get_all_tensors().map_err(|e| store_err(format!("{e:?}")))?.values().cloned().collect();
    let mut unused = Vec::new();
    let mut tensors = Vec::with_capacity(stored.len());
    for t in stored {
        match naming.module_path(&t.name) {
            None => unused.push(t.name.clone()),
            Some(p) if naming.transposed(&p) && transposable(&t) => {
                let dims = t.shape.as_slice().to_vec();
                let dtype = t.dtype;
                tensors.push(bridge::map_data(t, p, dtype, Shape::new([dims[1], dims[0]]), transpose_2d));
            }
            Some(p) => {
                let mut t = t;
                t.name = p;
                tensors.push(t);
            }
        }
    }
    let res = model.apply(tensors, None, None, true);
    if !res.errors.is_empty() {
        return Err(store_err(format!("Import errors: {:?}", res.errors)));
    }
    unused.extend(res.unused.iter().map(|p| naming.published(p)));
    let report = LoadReport {
        applied: res.applied,
        missing: res.missing.into_iter().map(|(p, _)| p).collect(),
        unused,
        errors: Vec::new(),
    };
    Ok((model, report))
}

/// Writes a JSON file.
pub fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<(), NnError> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| NnError::Json { path: path.display().to_string(), message: e.to_string() })?;
    fs::write(path, text).map_err(|e| NnError::io(path, e))
}

/// Reads a JSON file.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, NnError> {
    let text = fs::read_to_string(path).map_err(|e| NnError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| NnError::Json { path: path.display().to_string(), message: e.to_string() })
}

/// Writes `config.json` = `{"model": <model config>, "train": <training config>}`.
pub fn write_config<T: Serialize>(dir: &Path, model_config: &serde_json::Value, train: &T) -> Result<(), NnError> {
    write_json(&dir.join("config.json"), &serde_json::json!({ "model": model_config, "train": train }))
}

/// Fills a temporary sibling directory with `fill`, then renames it to `dir` (replacing a
/// previous `dir`, which is first moved aside and removed after the rename).
pub fn write_atomically(dir: &Path, fill: impl FnOnce(&Path) -> Result<(), NnError>) -> Result<(), NnError> {
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| NnError::io(parent, e))?;
    let name = dir.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| "checkpoint".into());
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    if tmp.exists() {
        fs::remove_dir_all(&tmp).map_err(|e| NnError::io(&tmp, e))?;
    }
    fs::create_dir_all(&tmp).map_err(|e| NnError::io(&tmp, e))?;
    if let Err(e) = fill(&tmp) {
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    let had_old = dir.exists();
    if had_old {
        fs::rename(dir, &old).map_err(|e| NnError::io(dir, e))?;
    }
    fs::rename(&tmp, dir).map_err(|e| NnError::io(dir, e))?;
    if had_old {
        fs::remove_dir_all(&old).map_err(|e| NnError::io(&old, e))?;
    }
    Ok(())
}
