//! Validation of matrices before they reach a model.

use sclm_data::{AnnData, Matrix};

use crate::error::{IoError, Result};

/// (row, column) of the `k`-th stored value.
fn locate(m: &Matrix, k: usize) -> (usize, usize) {
    match m {
        Matrix::Dense(d) => (k / d.ncols.max(1), k % d.ncols.max(1)),
        Matrix::Csr(c) => {
            let row = c.indptr.partition_point(|&p| p <= k) - 1;
            (row, c.indices[k] as usize)
        }
    }
}

/// Fails if the matrix has no rows or no columns.
pub fn check_not_empty(m: &Matrix, what: &str) -> Result<()> {
    let (n, g) = m.shape();
    if n == 0 || g == 0 {
        return Err(IoError::Invalid { what: what.to_string(), msg: format!("empty matrix ({n} cells x {g} genes)") });
    }
    Ok(())
}

/// Fails on NaN or infinite values, naming how many and where the first one is.
pub fn check_finite(m: &Matrix, what: &str) -> Result<()> {
    let v = m.values();
    let bad = v.iter().filter(|x| !x.is_finite()).count();
    if bad > 0 {
        let k = v.iter().position(|x| !x.is_finite()).unwrap_or(0);
        let (r, c) = locate(m, k);
        return Err(IoError::Invalid {
            what: what.to_string(),
            msg: format!("{bad} non-finite value(s), the first ({}) at cell {r}, gene {c}", v[k]),
        });
    }
    Ok(())
}

/// Checks that `X` can be used as raw counts: not empty, finite, and not negative.
/// (Non-integer values are allowed here; `Matrix::looks_like_counts` tells them apart.)
/// `what` names the input in the message, e.g. the file name.
pub fn check_counts(adata: &AnnData, what: &str) -> Result<()> {
    let w = format!("X of {what}");
    check_not_empty(&adata.x, &w)?;
    check_finite(&adata.x, &w)?;
    let v = adata.x.values();
    let neg = v.iter().filter(|&&x| x < 0.0).count();
    if neg > 0 {
        let k = v.iter().position(|&x| x < 0.0).unwrap_or(0);
        let (r, c) = locate(&adata.x, k);
        let gene = adata.var.index.get(c).cloned().unwrap_or_default();
        let cell = adata.obs.index.get(r).cloned().unwrap_or_default();
        return Err(IoError::Invalid {
            what: w,
            msg: format!(
                "{neg} negative value(s) where counts are expected, the first ({}) at cell '{cell}', gene '{gene}' (is X scaled or log-transformed? use raw counts)",
                v[k]
            ),
        });
    }
    Ok(())
}
