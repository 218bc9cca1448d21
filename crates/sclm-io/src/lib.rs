//! File input and output for sclm, in pure Rust (no C library needed).
//!
//! * `.h5ad` (AnnData): [`read_h5ad`] / [`read_h5ad_with_report`] read the current layout
//!   (encoding-type attributes, anndata ≥ 0.8), anndata 0.7 (`__categories`) and pre-0.7
//!   files (compound `obs`/`var`, categories in `uns`), with dense, CSR or CSC `X`, layers
//!   and `obsp` (a pre-0.7 neighbour graph in `uns/neighbors` is moved to `obsp`, as anndata
//!   does; `varp` is not kept).
//!   [`write_h5ad`] writes the current layout, atomically.
//! * Large files: [`H5adRowReader`] reads row ranges of `X` without loading it whole (and
//!   [`H5adRowReader::annotations`] everything but `X`, layers and raw);
//!   [`H5adStreamWriter`] writes `X` chunk by chunk, everything else (obsp included) from a
//!   template at creation.
//! * Cell Ranger: [`read_10x_mtx`] (v2 and v3 directories) and [`read_10x_h5`] (v2 and v3).
//! * [`read_any`] picks the reader from the path.
//! * [`check_counts`] and [`check_finite`] validate a matrix before a model sees it.
//!
//! Every error is an [`IoError`] whose message names the file and the element concerned.
#![warn(missing_docs)]

mod check;
mod error;
mod h5;
mod read;
mod stream;
mod tenx;
mod write;

use std::path::Path;

pub use check::{check_counts, check_finite, check_not_empty};
pub use error::{IoError, Result};
pub use read::{read_h5ad, read_h5ad_with_report, ReadOptions, ReadReport};
pub use stream::{H5adRowReader, H5adStreamWriter};
pub use tenx::{is_10x_mtx_dir, read_10x_h5, read_10x_mtx, read_mtx};
pub use write::{write_h5ad, WriteOptions};

use sclm_data::AnnData;

/// The kinds of input [`read_any`] recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputKind {
    /// An AnnData `.h5ad` file.
    H5ad,
    /// A Cell Ranger HDF5 matrix (`.h5`).
    TenxH5,
    /// A Cell Ranger Matrix Market directory.
    TenxMtx,
}

/// Says what kind of input `path` is: a directory (or a `matrix.mtx[.gz]` file) holding a
/// Cell Ranger matrix, a Cell Ranger `.h5`, or an `.h5ad` (by content, not only extension).
pub fn detect_kind(path: impl AsRef<Path>) -> Result<InputKind> {
    let path = path.as_ref();
    let file = error::fname(path);
    if path.is_dir() {
        return if mtx_dir(path).is_some() {
            Ok(InputKind::TenxMtx)
        } else {
            Err(IoError::NotReadable { file, msg: "directory without a Cell Ranger matrix (matrix.mtx[.gz])".into() })
        };
    }
    let lname = path.file_name().map(|s| s.to_string_lossy().to_lowercase()).unwrap_or_default();
    if lname.ends_with(".mtx") || lname.ends_with(".mtx.gz") {
        return Ok(InputKind::TenxMtx);
    }
    if lname.ends_with(".h5ad") {
        return Ok(InputKind::H5ad);
    }
    let h = h5::H5::open(path)?;
    let is10x = error::guard(&h.name, || Ok(tenx::looks_like_10x_h5(&h)))?;
    Ok(if is10x { InputKind::TenxH5 } else { InputKind::H5ad })
}

/// The directory holding `matrix.mtx[.gz]`: `dir` itself, or its only sub-directory that has one
/// (as in Cell Ranger v2's `filtered_gene_bc_matrices/<genome>/`).
fn mtx_dir(dir: &Path) -> Option<std::path::PathBuf> {
    if is_10x_mtx_dir(dir) {
        return Some(dir.to_path_buf());
    }
    let subs: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.is_dir() && is_10x_mtx_dir(p))
        .collect();
    if subs.len() == 1 {
        subs.into_iter().next()
    } else {
        None
    }
}

/// Reads any supported input (see [`detect_kind`]) with default options.
pub fn read_any(path: impl AsRef<Path>) -> Result<(AnnData, ReadReport)> {
    read_any_with(path, &ReadOptions::default())
}

/// Reads any supported input (see [`detect_kind`]); `opts.genome` selects the genome of a
/// multi-genome Cell Ranger v2 `.h5`.
pub fn read_any_with(path: impl AsRef<Path>, opts: &ReadOptions) -> Result<(AnnData, ReadReport)> {
    let path = path.as_ref();
    match detect_kind(path)? {
        InputKind::H5ad => read_h5ad_with_report(path, opts),
        InputKind::TenxH5 => read_10x_h5(path, opts.genome.as_deref()),
        InputKind::TenxMtx => {
            let dir = if path.is_dir() {
                path.to_path_buf()
            } else {
                path.parent().map(|p| p.to_path_buf()).unwrap_or_default()
            };
            let d = mtx_dir(&dir).ok_or_else(|| IoError::NotReadable {
                file: error::fname(&dir),
                msg: "no Cell Ranger matrix (matrix.mtx[.gz]) here, or several sub-directories with one".into(),
            })?;
            read_10x_mtx(d)
        }
    }
}
