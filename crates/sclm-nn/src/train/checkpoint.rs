//! Checkpoint files: `config.json`, `model.safetensors` (tensor names = module paths, enum
//! variant names skipped, e.g. `encoder.layers.0.self_attn.query_projection.weight`),
//! `param_ids.json`, `optimizer.<group>.bpk` (burn's burnpack optimiser records) and
//! `train_state.json`. Directories are written under a temporary name and renamed into place.
use std::fs;
use std::path::Path;

use burn::module::Module;
use burn::store::{ModuleSnapshot, SafetensorsStore};
use serde::de::DeserializeOwned;
use serde::Serialize;

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
