//! Accounting for model importers: which tensors were used, left over, missing or of the wrong shape.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::{Result, WeightsError};
use crate::tensor::{StateDict, TensorData};

/// A tensor whose shape differs from what the model expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// Tensor key.
    pub key: String,
    /// Shape the model wants.
    pub expected: Vec<usize>,
    /// Shape found in the file.
    pub found: Vec<usize>,
}

/// What happened to each tensor when a model took its weights from a state dict. A model importer must
/// never load partially without saying so: check [`LoadReport::is_complete`] or call
/// [`LoadReport::ensure_complete`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LoadReport {
    /// Keys taken by the model, in the order they were taken.
    pub loaded: Vec<String>,
    /// Keys present in the file but not used by the model (sorted).
    pub skipped: Vec<String>,
    /// Keys the model wanted that are absent from the file.
    pub missing: Vec<String>,
    /// Keys present with a different shape (not loaded).
    pub shape_mismatch: Vec<ShapeMismatch>,
}

impl LoadReport {
    /// Compares a state dict with the tensors a model wants (`(key, shape)` pairs) without taking anything.
    pub fn check<'a>(sd: &StateDict, wanted: impl IntoIterator<Item = (&'a str, &'a [usize])>) -> LoadReport {
        let mut r = LoadReport::default();
        let mut used = BTreeSet::new();
        for (key, shape) in wanted {
            match sd.get(key) {
                None => r.missing.push(key.to_string()),
                Some(t) if t.shape != shape => {
                    used.insert(key.to_string());
                    r.shape_mismatch.push(ShapeMismatch {
                        key: key.to_string(),
                        expected: shape.to_vec(),
                        found: t.shape.clone(),
                    })
                }
                Some(_) => {
                    used.insert(key.to_string());
                    r.loaded.push(key.to_string())
                }
            }
        }
        r.skipped = sd.keys().filter(|k| !used.contains(*k)).cloned().collect();
        r
    }

    /// True when nothing is missing and no shape differs (skipped keys are allowed).
    pub fn is_complete(&self) -> bool {
        self.missing.is_empty() && self.shape_mismatch.is_empty()
    }

    /// One-line summary: counts, then the first few missing and mismatched keys.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{} loaded, {} skipped, {} missing, {} shape mismatches",
            self.loaded.len(),
            self.skipped.len(),
            self.missing.len(),
            self.shape_mismatch.len()
        );
        if !self.missing.is_empty() {
            let first: Vec<&str> = self.missing.iter().take(5).map(String::as_str).collect();
            s.push_str(&format!("; missing: {}", first.join(", ")));
            if self.missing.len() > 5 {
                s.push_str(", ...");
            }
        }
        for m in self.shape_mismatch.iter().take(5) {
            s.push_str(&format!("; '{}' is {:?}, expected {:?}", m.key, m.found, m.expected));
        }
        s
    }

    /// Fails (naming the file) unless the report is complete.
    pub fn ensure_complete(&self, path: &Path) -> Result<()> {
        if self.is_complete() {
            Ok(())
        } else {
            Err(WeightsError::Incomplete { path: path.to_path_buf(), summary: self.summary() })
        }
    }
}

/// Hands tensors out of a state dict one by one and records the outcome in a [`LoadReport`].
#[derive(Debug)]
pub struct TensorLoader {
    path: PathBuf,
    sd: StateDict,
    report: LoadReport,
}

impl TensorLoader {
    /// Wraps a state dict read from `path` (the path is only used in error messages).
    pub fn new(path: impl AsRef<Path>, sd: StateDict) -> Self {
        TensorLoader { path: path.as_ref().to_path_buf(), sd, report: LoadReport::default() }
    }

    /// Takes the tensor `key` if present with exactly `shape`; otherwise records it as missing or
    /// mismatched and returns `None`.
    pub fn take(&mut self, key: &str, shape: &[usize]) -> Option<TensorData> {
        match self.sd.get(key) {
            None => {
                self.report.missing.push(key.to_string());
                None
            }
            Some(t) if t.shape != shape => {
                let found = t.shape.clone();
                self.sd.remove(key);
                self.report.shape_mismatch.push(ShapeMismatch {
                    key: key.to_string(),
                    expected: shape.to_vec(),
                    found,
                });
                None
            }
            Some(_) => {
                self.report.loaded.push(key.to_string());
                self.sd.remove(key)
            }
        }
    }

    /// Takes a float tensor as a plain vector; `None` (and a report entry) when absent, of another shape,
    /// or not floating point.
    pub fn take_f32(&mut self, key: &str, shape: &[usize]) -> Option<Vec<f32>> {
        let t = self.take(key, shape)?;
        match t.into_f32(key) {
            Ok(v) => Some(v),
            Err(_) => {
                self.report.loaded.pop();
                self.report.missing.push(format!("{key} (not floating point)"));
                None
            }
        }
    }

    /// Whether `key` is still available.
    pub fn contains(&self, key: &str) -> bool {
        self.sd.contains_key(key)
    }

    /// Shape of `key` if still available (to size a model from its checkpoint).
    pub fn shape(&self, key: &str) -> Option<&[usize]> {
        self.sd.get(key).map(|t| t.shape.as_slice())
    }

    /// Ends loading: every key not taken is reported as skipped.
    pub fn finish(mut self) -> LoadReport {
        self.report.skipped = self.sd.keys().cloned().collect();
        self.report
    }

    /// Ends loading and fails unless every wanted tensor was found with its shape.
    pub fn finish_complete(self) -> Result<LoadReport> {
        let path = self.path.clone();
        let r = self.finish();
        r.ensure_complete(&path)?;
        Ok(r)
    }
}
