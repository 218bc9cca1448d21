//! Atomic output: everything is written beside its destination and renamed into place,
//! so that a failed command never leaves a half-written file.

use std::io::Write;
use std::path::Path;

use anyhow::{Context, Result};

fn temp_beside(path: &Path, suffix: &str) -> Result<tempfile::NamedTempFile> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    tempfile::Builder::new()
        .prefix(".sclm-")
        .suffix(suffix)
        .tempfile_in(dir)
        .with_context(|| format!("{}: cannot create a file in {}", path.display(), dir.display()))
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = temp_beside(path, ".tmp")?;
    tmp.write_all(bytes).with_context(|| path.display().to_string())?;
    tmp.persist(path).map_err(|e| e.error).with_context(|| path.display().to_string())?;
    Ok(())
}

/// Lets `draw` write a PNG to a temporary path, then moves it to `path`.
pub fn plot_atomic<E>(path: &Path, draw: impl FnOnce(&Path) -> std::result::Result<(), E>) -> Result<()>
where
    E: std::error::Error + Send + Sync + 'static,
{
    let tmp = temp_beside(path, ".png")?.into_temp_path();
    draw(&tmp).with_context(|| path.display().to_string())?;
    tmp.persist(path).map_err(|e| e.error).with_context(|| path.display().to_string())?;
    Ok(())
}
