//! `sc.pp.normalize_total`, `sc.pp.log1p` and `sc.pp.scale`.

use rayon::prelude::*;
use sclm_data::{AnnData, Dense, Matrix, Value};
use serde::{Deserialize, Serialize};

use crate::stats::{col_stats, median};
use crate::{invalid, Result};

/// Options of [`normalize_total`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NormalizeOptions {
    /// Total per cell after normalisation; `None` (default) = the median of the cells'
    /// totals before normalisation, as scanpy (for a CSR matrix scanpy takes the median over
    /// all cells, for a dense one over the cells with a non-zero total; both are followed).
    pub target_sum: Option<f64>,
    /// When set (scanpy's `exclude_highly_expressed=True, max_fraction=…`), genes that make
    /// up more than this fraction of some cell's total are left out of every cell's total.
    pub exclude_highly_expressed: Option<f64>,
}

/// Rows per parallel task.
const ROWS: usize = 512;

/// Normalises every cell to the same total, in place. Returns the target sum used.
/// Cells with a zero total are left at zero.
pub fn normalize_total(x: &mut Matrix, opts: &NormalizeOptions) -> Result<f64> {
    let step = "normalize_total";
    if let Some(v) = x.values().iter().find(|v| !v.is_finite()) {
        return Err(invalid(step, format!("X holds a non-finite value ({v})")));
    }
    let n = x.shape().0;
    let mut totals: Vec<f64> = crate::stats::row_sums(x).0;
    if let Some(frac) = opts.exclude_highly_expressed {
        if !(0.0..=1.0).contains(&frac) {
            return Err(invalid(step, format!("max_fraction must lie in [0, 1], got {frac}")));
        }
        let g = x.shape().1;
        let mut high = vec![false; g];
        for (i, &t) in totals.iter().enumerate() {
            crate::stats::for_row(x, i, |j, v| {
                if v as f64 > frac * t {
                    high[j] = true
                }
            });
        }
        totals = (0..n)
            .into_par_iter()
            .map(|i| {
                let mut s = 0f64;
                crate::stats::for_row(x, i, |j, v| {
                    if !high[j] {
                        s += v as f64
                    }
                });
                s
            })
            .collect();
    }
    let target = match opts.target_sum {
        Some(t) => {
            if !(t > 0.0 && t.is_finite()) {
                return Err(invalid(step, format!("target_sum must be positive, got {t}")));
            }
            t
        }
        None => match x {
            Matrix::Csr(_) => median(&totals),
            Matrix::Dense(_) => median(&totals.iter().copied().filter(|&t| t > 0.0).collect::<Vec<_>>()),
        },
    };
    let factor: Vec<f64> = totals.iter().map(|&t| if t > 0.0 { target / t } else { 1.0 }).collect();
    match x {
        Matrix::Csr(c) => {
            let indptr = &c.indptr;
            // split the data by rows
            let mut rest: &mut [f32] = &mut c.data;
            let mut parts: Vec<(usize, &mut [f32])> = Vec::with_capacity(n);
            for i in 0..n {
                let (a, b) = rest.split_at_mut(indptr[i + 1] - indptr[i]);
                parts.push((i, a));
                rest = b;
            }
            parts.par_iter_mut().with_min_len(ROWS).for_each(|(i, row)| {
                let f = factor[*i];
                for v in row.iter_mut() {
                    *v = (*v as f64 * f) as f32;
                }
            });
        }
        Matrix::Dense(d) => {
            let g = d.ncols.max(1);
            d.data.par_chunks_mut(g).enumerate().for_each(|(i, row)| {
                let f = factor[i];
                for v in row.iter_mut() {
                    *v = (*v as f64 * f) as f32;
                }
            });
        }
    }
    Ok(target)
}

/// [`normalize_total`] on `adata.X`; records nothing in `uns` (as scanpy).
pub fn normalize_total_adata(adata: &mut AnnData, opts: &NormalizeOptions) -> Result<f64> {
    normalize_total(&mut adata.x, opts)
}

/// `sc.pp.log1p`: natural `log(1 + x)` in place (zeros stay zero, so sparsity is kept).
/// Errors on negative values below −1 would give NaN, so any negative value is refused.
pub fn log1p(x: &mut Matrix) -> Result<()> {
    let data: &mut [f32] = match x {
        Matrix::Csr(c) => &mut c.data,
        Matrix::Dense(d) => &mut d.data,
    };
    if let Some(v) = data.iter().find(|v| **v < 0.0 || !v.is_finite()) {
        return Err(invalid(
            "log1p",
            format!("X holds a negative or non-finite value ({v}); log1p expects counts or normalised counts"),
        ));
    }
    data.par_chunks_mut(1 << 14).for_each(|c| c.iter_mut().for_each(|v| *v = v.ln_1p()));
    Ok(())
}

/// Records `uns['log1p'] = {'base': None}` as scanpy does (an empty map here).
pub fn log1p_adata(adata: &mut AnnData) -> Result<()> {
    log1p(&mut adata.x)?;
    adata.uns.insert("log1p".into(), Value::Map(Default::default()));
    Ok(())
}

/// `sc.pp.scale`: each gene to unit variance (ddof = 1; constant genes are divided by 1)
/// and, with `zero_center`, zero mean; then values above `max_value` (and, when
/// zero-centring, below `−max_value`) are clipped. The result is dense.
/// Returns the scaled matrix with the per-gene means and standard deviations used.
pub fn scale(x: &Matrix, zero_center: bool, max_value: Option<f32>) -> Result<(Dense<f32>, Vec<f64>, Vec<f64>)> {
    if let Some(m) = max_value {
        if m.is_nan() || m <= 0.0 {
            return Err(invalid("scale", format!("max_value must be positive, got {m}")));
        }
    }
    let (n, g) = x.shape();
    let (mean, var) = col_stats(x, None).mean_var(n);
    let std: Vec<f64> = var.iter().map(|&v| if v > 0.0 { v.sqrt() } else { 1.0 }).collect();
    let mut out = x.to_dense();
    let gm = g.max(1);
    out.data.par_chunks_mut(gm).for_each(|row| {
        for (j, v) in row.iter_mut().enumerate() {
            let mut y = *v as f64;
            if zero_center {
                y -= mean[j];
            }
            let mut y = (y / std[j]) as f32;
            if let Some(m) = max_value {
                if y > m {
                    y = m
                } else if zero_center && y < -m {
                    y = -m
                }
            }
            *v = y;
        }
    });
    Ok((out, mean, std))
}
