//! `sclm info`: describe a file.

use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::Result;
use sclm_data::{AnnData, Column, DataFrame, Matrix};

use crate::Global;

/// Arguments of `sclm info`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A .h5ad file, a Cell Ranger .h5 file or a Cell Ranger matrix directory.
    pub input: PathBuf,
}

pub fn run(g: &Global, args: Args) -> Result<()> {
    let (adata, report) = sclm_io::read_any(&args.input)?;
    crate::progress::warn_read(g.quiet, &args.input, &report);
    print!("{}", describe(&args.input.display().to_string(), report_layout(&report), &adata));
    Ok(())
}

/// A human-readable summary of an AnnData.
pub fn describe(name: &str, layout: &str, a: &AnnData) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "file:    {name}");
    let _ = writeln!(s, "layout:  {layout}");
    let _ = writeln!(s, "shape:   {} cells x {} genes", a.n_obs(), a.n_vars());
    let _ = writeln!(s, "X:       {}", matrix_summary(&a.x));
    if let Some(raw) = &a.raw {
        let _ = writeln!(s, "raw.X:   {} ({} genes)", matrix_summary(&raw.x), raw.var.nrows());
    }
    for (k, m) in &a.layers {
        let _ = writeln!(s, "layers['{k}']: {}", matrix_summary(m));
    }
    frame_summary(&mut s, "obs", &a.obs);
    frame_summary(&mut s, "var", &a.var);
    for (what, map) in [("obsm", &a.obsm), ("varm", &a.varm)] {
        if !map.is_empty() {
            let items: Vec<String> =
                map.iter().map(|(k, v)| format!("{k} ({} x {})", v.shape().0, v.shape().1)).collect();
            let _ = writeln!(s, "{what}:    {}", items.join(", "));
        }
    }
    if !a.uns.is_empty() {
        let _ = writeln!(s, "uns:     {}", a.uns.keys().cloned().collect::<Vec<_>>().join(", "));
    }
    s
}

fn matrix_summary(m: &Matrix) -> String {
    let (n, g) = m.shape();
    let vals = m.values();
    let (mut lo, mut hi, mut finite) = (f32::INFINITY, f32::NEG_INFINITY, true);
    for &v in vals {
        if v.is_finite() {
            lo = lo.min(v);
            hi = hi.max(v);
        } else {
            finite = false;
        }
    }
    let nnz = vals.iter().filter(|&&v| v != 0.0).count();
    let density = if n * g == 0 { 0.0 } else { 100.0 * nnz as f64 / (n as f64 * g as f64) };
    let kind = match m {
        Matrix::Dense(_) => "dense".to_string(),
        Matrix::Csr(c) => format!("sparse CSR, {} stored", c.nnz()),
    };
    let range = if vals.is_empty() { "empty".to_string() } else { format!("values {lo} .. {hi}") };
    let counts = if m.looks_like_counts() { "raw counts (non-negative integers)" } else { "not raw counts" };
    let nonfinite = if finite { "" } else { ", HAS NON-FINITE VALUES" };
    format!("{kind}, {density:.1}% non-zero, {range}, {counts}{nonfinite}")
}

fn frame_summary(s: &mut String, what: &str, df: &DataFrame) {
    let examples: Vec<&str> = df.index.iter().take(3).map(|x| x.as_str()).collect();
    let _ = writeln!(s, "{what}:     {} rows, names e.g. {}", df.nrows(), examples.join(", "));
    for (name, col) in &df.columns {
        let detail = match col {
            Column::Categorical { categories, codes, .. } => {
                let mut sizes = vec![0usize; categories.len()];
                for &c in codes.iter().filter(|&&c| c >= 0) {
                    sizes[c as usize] += 1;
                }
                let shown: Vec<String> =
                    categories.iter().zip(&sizes).take(12).map(|(c, n)| format!("{c}: {n}")).collect();
                let more = if categories.len() > 12 { ", ..." } else { "" };
                format!("{} categories ({}{more})", categories.len(), shown.join(", "))
            }
            Column::Bool(v) => {
                format!("{} true, {} false", v.iter().filter(|&&b| b).count(), v.iter().filter(|&&b| !b).count())
            }
            other => match other.to_f64() {
                Some(v) if !v.is_empty() => {
                    let lo = v.iter().cloned().fold(f64::INFINITY, f64::min);
                    let hi = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    format!("{} .. {}", lo, hi)
                }
                _ => String::new(),
            },
        };
        let _ = writeln!(s, "  {name:<24} {:<9} {detail}", col.kind());
    }
}

/// The on-disk layout a reader recognised, for display.
pub fn report_layout(r: &sclm_io::ReadReport) -> &str {
    &r.layout
}
