//! The model directory: a self-describing folder that any family writes and [`crate::load_any`]
//! reads.
//!
//! ```text
//! my-model/
//!   model.json          manifest: format, format_version, family, kind, registry, classes
//!   config.json         the family's configuration (published keys where there are some)
//!   genes.txt           the gene vocabulary, one identifier per line, in model order
//!   model.safetensors   the weights, under the published state-dict names
//!   head.safetensors    (classifiers) the classification head
//! ```
//!
//! Directories written before the manifest existed (CellPLM: `config.json`, `genes.txt`,
//! `model.safetensors`, optional `preprocessing.json`) keep loading: [`read_manifest`] builds
//! their manifest from those files (`format_version` 0).
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{ModelError, Result};

/// The manifest's format name.
pub const FORMAT: &str = "sclm-model";
/// The manifest version this build writes (and the newest it reads).
pub const FORMAT_VERSION: u32 = 1;

/// What a model directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// A pretrained (or imported) model: embeds cells (default).
    #[default]
    Pretrained,
    /// A fine-tuned cell classifier: embeds cells and predicts `classes`.
    Classifier,
}

/// `model.json`: which family reads the directory and how input must be prepared.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// Version of this layout ([`FORMAT_VERSION`]; 0 = a directory without `model.json`).
    pub format_version: u32,
    /// Model family (`cellplm`, ...).
    pub family: String,
    /// What the directory holds.
    #[serde(default)]
    pub kind: ModelKind,
    /// How input data must be prepared; loaders honour it.
    #[serde(default)]
    pub registry: Registry,
    /// Class names in output order (classifiers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub classes: Vec<String>,
}

impl Manifest {
    /// A manifest of the current version.
    pub fn new(family: impl Into<String>, kind: ModelKind, registry: Registry) -> Self {
        Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            family: family.into(),
            kind,
            registry,
            classes: Vec::new(),
        }
    }

    /// The manifest as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// How input data must be prepared for a model, and the labels of its covariate tables. Read
/// from `model.json` (or a legacy `preprocessing.json`, whose keys these are).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    /// Expected input values: `raw_counts` (non-negative integers; default).
    #[serde(default = "d_input")]
    pub input: String,
    /// Transform applied inside the model: `log1p` (default).
    #[serde(default = "d_transform")]
    pub transform: String,
    /// Whether counts are library-size normalised before the model (default false).
    #[serde(default)]
    pub library_size_normalization: bool,
    /// What the vocabulary holds: `ensembl_gene_id` (default), `symbol` or `var_index`.
    #[serde(default = "d_gene_id")]
    pub gene_id: String,
    /// obs column defining the groups of cells that attend to each other (default `batch`;
    /// empty = all cells of a file form one group). `sclm embed` uses it unless told otherwise.
    #[serde(default = "d_group")]
    pub group_key: String,
    /// obsm key of the 2-D coordinates the model reads when the data has them (default
    /// `spatial`; empty = none). Models without a positional encoding ignore coordinates.
    #[serde(default = "d_spatial")]
    pub spatial_key: String,
    /// Label of each row of the model's batch table (`dataset/batch` for models pretrained by
    /// sclm; empty for imported models, whose tables are anonymous).
    #[serde(default)]
    pub batch_labels: Vec<String>,
    /// Label of each row of the model's dataset table.
    #[serde(default)]
    pub dataset_labels: Vec<String>,
}

impl Registry {
    /// The batch-table row of `dataset/batch`, if the model knows it.
    pub fn batch_id(&self, dataset: &str, batch: &str) -> Option<usize> {
        let key = format!("{dataset}/{batch}");
        self.batch_labels.iter().position(|l| *l == key)
    }

    /// The group key, `None` when cells are not grouped.
    pub fn group_key(&self) -> Option<&str> {
        (!self.group_key.is_empty()).then_some(self.group_key.as_str())
    }

    /// The coordinate key, `None` when the model reads none.
    pub fn spatial_key(&self) -> Option<&str> {
        (!self.spatial_key.is_empty()).then_some(self.spatial_key.as_str())
    }

    /// Whether the model wants integer counts.
    pub fn wants_integer_counts(&self) -> bool {
        self.input == "raw_counts"
    }
}

fn d_input() -> String {
    "raw_counts".into()
}
fn d_transform() -> String {
    "log1p".into()
}
fn d_gene_id() -> String {
    "ensembl_gene_id".into()
}
fn d_group() -> String {
    "batch".into()
}
fn d_spatial() -> String {
    "spatial".into()
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            input: d_input(),
            transform: d_transform(),
            library_size_normalization: false,
            gene_id: d_gene_id(),
            group_key: d_group(),
            spatial_key: d_spatial(),
            batch_labels: Vec::new(),
            dataset_labels: Vec::new(),
        }
    }
}

/// Reads the manifest of `dir`: `model.json`, or for a directory written before it existed
/// (CellPLM's `config.json` + `model.safetensors`), a version-0 manifest built from
/// `preprocessing.json` (when present). Unknown formats and newer versions are refused.
pub fn read_manifest(dir: impl AsRef<Path>) -> Result<Manifest> {
    let dir = dir.as_ref();
    if !dir.is_dir() {
        return Err(ModelError::Config(format!("{}: not a model directory (no such directory)", dir.display())));
    }
    let path = dir.join("model.json");
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let m: Manifest = serde_json::from_str(&text)
                .map_err(|e| ModelError::Json { path: path.display().to_string(), message: e.to_string() })?;
            if m.format != FORMAT {
                return Err(ModelError::Config(format!(
                    "{}: format '{}', expected '{FORMAT}'",
                    path.display(),
                    m.format
                )));
            }
            if m.format_version > FORMAT_VERSION {
                return Err(ModelError::Config(format!(
                    "{}: format_version {} is newer than this sclm reads ({FORMAT_VERSION}); update sclm",
                    path.display(),
                    m.format_version
                )));
            }
            Ok(m)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if !dir.join("config.json").is_file() || !dir.join("model.safetensors").is_file() {
                return Err(ModelError::Config(format!(
                    "{}: not a model directory (no model.json; write one with `sclm import` or `sclm pretrain`)",
                    dir.display()
                )));
            }
            let ppath = dir.join("preprocessing.json");
            let registry = match std::fs::read_to_string(&ppath) {
                Ok(text) => serde_json::from_str(&text)
                    .map_err(|e| ModelError::Json { path: ppath.display().to_string(), message: e.to_string() })?,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Registry::default(),
                Err(e) => return Err(ModelError::io(&ppath, e)),
            };
            Ok(Manifest { format_version: 0, ..Manifest::new("cellplm", ModelKind::Pretrained, registry) })
        }
        Err(e) => Err(ModelError::io(&path, e)),
    }
}

/// Reads `genes.txt` of `dir` (one identifier per line, blank lines ignored).
pub fn read_genes(dir: impl AsRef<Path>) -> Result<Vec<String>> {
    let p = dir.as_ref().join("genes.txt");
    let text = std::fs::read_to_string(&p).map_err(|e| ModelError::io(&p, e))?;
    Ok(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from).collect())
}

/// Writes a model directory atomically: `write` fills a temporary sibling directory, which is
/// then renamed over `dir` (an existing directory there is replaced only once the new one is
/// complete); on any error the temporary directory is removed and `dir` is left as it was.
pub fn save_atomic(dir: impl AsRef<Path>, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let dir = dir.as_ref();
    let name = dir
        .file_name()
        .ok_or_else(|| ModelError::Input(format!("{} is not a directory name", dir.display())))?
        .to_string_lossy()
        .to_string();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::create_dir_all(&parent).map_err(|e| ModelError::io(&parent, e))?;
    let pid = std::process::id();
    let tmp = parent.join(format!(".{name}.tmp-{pid}"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| ModelError::io(&tmp, e))?;
    if let Err(e) = write(&tmp) {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    if dir.exists() {
        let old = parent.join(format!(".{name}.old-{pid}"));
        std::fs::rename(dir, &old).map_err(|e| ModelError::io(dir, e))?;
        std::fs::rename(&tmp, dir).map_err(|e| ModelError::io(dir, e))?;
        std::fs::remove_dir_all(&old).map_err(|e| ModelError::io(&old, e))?;
    } else {
        std::fs::rename(&tmp, dir).map_err(|e| ModelError::io(dir, e))?;
    }
    Ok(())
}

/// Writes `text` to `dir/file`.
pub fn write_text(dir: &Path, file: &str, text: &str) -> Result<()> {
    let p = dir.join(file);
    std::fs::write(&p, text).map_err(|e| ModelError::io(&p, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_legacy_directories_load() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        let mut m = Manifest::new(
            "cellplm",
            ModelKind::Classifier,
            Registry { group_key: "sample".into(), ..Default::default() },
        );
        m.classes = vec!["B".into(), "T".into()];
        save_atomic(&dir, |t| write_text(t, "model.json", &m.to_json())).unwrap();
        assert_eq!(read_manifest(&dir).unwrap(), m);
        // A failed save leaves the old directory as it was, and no temporary directory.
        let e = save_atomic(&dir, |t| {
            write_text(t, "model.json", "{}")?;
            Err(ModelError::Input("disk full".into()))
        });
        assert!(e.is_err());
        assert_eq!(read_manifest(&dir).unwrap(), m);
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
        // Legacy CellPLM directory: config.json + model.safetensors + preprocessing.json.
        let old = tmp.path().join("old");
        std::fs::create_dir(&old).unwrap();
        std::fs::write(old.join("config.json"), "{}").unwrap();
        std::fs::write(old.join("model.safetensors"), "").unwrap();
        std::fs::write(old.join("preprocessing.json"), r#"{"group_key": "donor"}"#).unwrap();
        let lm = read_manifest(&old).unwrap();
        assert_eq!((lm.family.as_str(), lm.format_version, lm.registry.group_key.as_str()), ("cellplm", 0, "donor"));
        // Not a model directory; a newer format.
        let e = read_manifest(tmp.path()).unwrap_err().to_string();
        assert!(e.contains("not a model directory"), "{e}");
        let mut newer = m.clone();
        newer.format_version = FORMAT_VERSION + 1;
        std::fs::write(dir.join("model.json"), newer.to_json()).unwrap();
        assert!(read_manifest(&dir).unwrap_err().to_string().contains("newer"));
    }
}
