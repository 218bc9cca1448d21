//! Row access to a cells × genes matrix that lives elsewhere (a NumPy array or the buffers of a
//! SciPy sparse matrix handed over by the Python package), so that a model can read a dataset
//! piece by piece without a copy of the whole matrix.
//!
//! [`RowSource`] is what the model layer reads; [`CsrView`], [`CscView`] and [`DenseView`]
//! borrow the three layouts AnnData holds in `X` or a layer, with any of the index and value
//! types SciPy and NumPy use. Only the rows asked for are ever converted (to an owned
//! [`CsrMatrix`] of `f32`, the type every model reads).
use crate::{CsrMatrix, DataError, Result};

/// A matrix read row by row: the cells of one forward call are gathered at a time.
pub trait RowSource: Sync {
    /// Number of rows (cells).
    fn nrows(&self) -> usize;
    /// Number of columns (genes).
    fn ncols(&self) -> usize;
    /// Rows `rows` (indices into this matrix, in the order given) as an owned CSR matrix of
    /// `rows.len()` rows, values converted to `f32`. An error names the row when the stored
    /// structure is malformed.
    fn gather(&self, rows: &[usize]) -> Result<CsrMatrix>;
    /// The whole matrix, when it already is an in-memory [`CsrMatrix`] (read in place).
    fn as_csr(&self) -> Option<&CsrMatrix> {
        None
    }
}

impl RowSource for CsrMatrix {
    fn nrows(&self) -> usize {
        self.nrows
    }
    fn ncols(&self) -> usize {
        self.ncols
    }
    fn gather(&self, rows: &[usize]) -> Result<CsrMatrix> {
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        indptr.push(0);
        let (mut idx, mut val) = (Vec::new(), Vec::new());
        for &r in rows {
            check_row(r, self.nrows)?;
            let (c, v) = self.row(r);
            idx.extend_from_slice(c);
            val.extend_from_slice(v);
            indptr.push(idx.len());
        }
        Ok(CsrMatrix { nrows: rows.len(), ncols: self.ncols, indptr, indices: idx, data: val })
    }
    fn as_csr(&self) -> Option<&CsrMatrix> {
        Some(self)
    }
}

/// An index type of a borrowed sparse structure (`int32` or `int64` in SciPy).
pub trait Index: Copy + Send + Sync {
    /// The index as `usize`; `None` when negative (or too large for this machine).
    fn to_usize(self) -> Option<usize>;
}

/// A value type of a borrowed matrix (`float32`, `float64`, `int32`, `int64`).
pub trait Scalar: Copy + Send + Sync {
    /// The value in single precision (rounded to nearest, as `h5ad` readers do).
    fn to_f32(self) -> f32;
}

macro_rules! index {
    ($($t:ty),*) => {$(
        impl Index for $t {
            fn to_usize(self) -> Option<usize> {
                usize::try_from(self).ok()
            }
        }
    )*};
}
index!(i32, i64, u32, u64);

macro_rules! scalar {
    ($($t:ty),*) => {$(
        impl Scalar for $t {
            fn to_f32(self) -> f32 {
                self as f32
            }
        }
    )*};
}
scalar!(f32, f64, i32, i64, u32, u64);

fn check_row(r: usize, nrows: usize) -> Result<()> {
    if r >= nrows {
        return Err(DataError::Invalid(format!("row {r} asked of a matrix with {nrows} rows")));
    }
    Ok(())
}

/// A CSR matrix borrowed from its three buffers (SciPy's `indptr`, `indices`, `data`).
/// Structure is checked when rows are gathered; rows with unsorted column indices are sorted
/// in the copy, never in the borrowed buffers.
#[derive(Debug, Clone, Copy)]
pub struct CsrView<'a, P, I, V> {
    nrows: usize,
    ncols: usize,
    indptr: &'a [P],
    indices: &'a [I],
    data: &'a [V],
}

impl<'a, P: Index, I: Index, V: Scalar> CsrView<'a, P, I, V> {
    /// Borrows `nrows × ncols` CSR buffers; checks their lengths (not their contents).
    pub fn new(nrows: usize, ncols: usize, indptr: &'a [P], indices: &'a [I], data: &'a [V]) -> Result<Self> {
        check_compressed("CSR", nrows, indptr, indices, data)?;
        Ok(CsrView { nrows, ncols, indptr, indices, data })
    }

    /// Stored range of row `r` (checked against the buffers).
    fn range(&self, r: usize) -> Result<(usize, usize)> {
        check_row(r, self.nrows)?;
        compressed_range(self.indptr, r, self.data.len(), "row")
    }
}

impl<P: Index, I: Index, V: Scalar> RowSource for CsrView<'_, P, I, V> {
    fn nrows(&self) -> usize {
        self.nrows
    }
    fn ncols(&self) -> usize {
        self.ncols
    }
    fn gather(&self, rows: &[usize]) -> Result<CsrMatrix> {
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        indptr.push(0);
        let (mut idx, mut val) = (Vec::new(), Vec::new());
        for &r in rows {
            let (a, b) = self.range(r)?;
            for k in a..b {
                let c = self.indices[k].to_usize().filter(|&c| c < self.ncols).ok_or_else(|| {
                    DataError::Sparse(format!("row {r} stores a column index outside 0..{}", self.ncols))
                })?;
                idx.push(c as u32);
                val.push(self.data[k].to_f32());
            }
            indptr.push(idx.len());
        }
        CsrMatrix::new(rows.len(), self.ncols, indptr, idx, val)
    }
}

/// A CSC matrix borrowed from its three buffers. Gathering rows scans the stored values of
/// every column once per call (no whole-matrix copy; each forward call's rows cost one pass).
#[derive(Debug, Clone, Copy)]
pub struct CscView<'a, P, I, V> {
    nrows: usize,
    ncols: usize,
    indptr: &'a [P],
    indices: &'a [I],
    data: &'a [V],
}

impl<'a, P: Index, I: Index, V: Scalar> CscView<'a, P, I, V> {
    /// Borrows `nrows × ncols` CSC buffers (`indptr` has `ncols + 1` entries); checks their
    /// lengths (not their contents).
    pub fn new(nrows: usize, ncols: usize, indptr: &'a [P], indices: &'a [I], data: &'a [V]) -> Result<Self> {
        check_compressed("CSC", ncols, indptr, indices, data)?;
        Ok(CscView { nrows, ncols, indptr, indices, data })
    }
}

impl<P: Index, I: Index, V: Scalar> RowSource for CscView<'_, P, I, V> {
    fn nrows(&self) -> usize {
        self.nrows
    }
    fn ncols(&self) -> usize {
        self.ncols
    }
    fn gather(&self, rows: &[usize]) -> Result<CsrMatrix> {
        // Position of each asked row in the output (u32::MAX = not asked).
        let mut pos = vec![u32::MAX; self.nrows];
        for (i, &r) in rows.iter().enumerate() {
            check_row(r, self.nrows)?;
            pos[r] = i as u32;
        }
        if rows.iter().enumerate().any(|(i, &r)| pos[r] != i as u32) {
            return Err(DataError::Invalid("a row is asked for twice".into()));
        }
        // Two passes over the stored values: count per output row, then fill in column order
        // (so each row's columns come out increasing).
        let mut counts = vec![0usize; rows.len() + 1];
        let mut entries = Vec::new();
        for c in 0..self.ncols {
            let (a, b) = compressed_range(self.indptr, c, self.data.len(), "column")?;
            for k in a..b {
                let r = self.indices[k].to_usize().filter(|&r| r < self.nrows).ok_or_else(|| {
                    DataError::Sparse(format!("column {c} stores a row index outside 0..{}", self.nrows))
                })?;
                let p = pos[r];
                if p != u32::MAX {
                    counts[p as usize + 1] += 1;
                    entries.push((p, c as u32, self.data[k].to_f32()));
                }
            }
        }
        for i in 0..rows.len() {
            counts[i + 1] += counts[i];
        }
        let indptr = counts.clone();
        let mut next = counts;
        let mut idx = vec![0u32; entries.len()];
        let mut val = vec![0f32; entries.len()];
        for (p, c, v) in entries {
            let k = next[p as usize];
            idx[k] = c;
            val[k] = v;
            next[p as usize] += 1;
        }
        CsrMatrix::new(rows.len(), self.ncols, indptr, idx, val)
    }
}

/// A dense matrix borrowed from a buffer with element strides (a NumPy array in C or Fortran
/// order, or a strided view of one).
#[derive(Debug, Clone, Copy)]
pub struct DenseView<'a, V> {
    nrows: usize,
    ncols: usize,
    data: &'a [V],
    row_stride: usize,
    col_stride: usize,
}

impl<'a, V: Scalar + PartialEq + Default> DenseView<'a, V> {
    /// Borrows `nrows × ncols` values, element `(r, c)` at `data[r·row_stride + c·col_stride]`;
    /// checks that every element lies inside `data`.
    pub fn new(nrows: usize, ncols: usize, data: &'a [V], row_stride: usize, col_stride: usize) -> Result<Self> {
        if nrows > 0 && ncols > 0 {
            let last = (nrows - 1)
                .checked_mul(row_stride)
                .and_then(|a| (ncols - 1).checked_mul(col_stride).and_then(|b| a.checked_add(b)));
            if last.is_none_or(|l| l >= data.len()) {
                return Err(DataError::Shape {
                    what: "dense matrix buffer".into(),
                    expected: format!("{nrows} × {ncols} with strides ({row_stride}, {col_stride})"),
                    found: format!("{} values", data.len()),
                });
            }
        }
        Ok(DenseView { nrows, ncols, data, row_stride, col_stride })
    }
}

impl<V: Scalar + PartialEq + Default> RowSource for DenseView<'_, V> {
    fn nrows(&self) -> usize {
        self.nrows
    }
    fn ncols(&self) -> usize {
        self.ncols
    }
    fn gather(&self, rows: &[usize]) -> Result<CsrMatrix> {
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        indptr.push(0);
        let (mut idx, mut val) = (Vec::new(), Vec::new());
        let zero = V::default();
        for &r in rows {
            check_row(r, self.nrows)?;
            let base = r * self.row_stride;
            for c in 0..self.ncols {
                let v = self.data[base + c * self.col_stride];
                // Zeros are not stored, as in `CsrMatrix::from_dense` (NaN is kept: it is
                // not equal to zero, and the count checks report it).
                if v != zero {
                    idx.push(c as u32);
                    val.push(v.to_f32());
                }
            }
            indptr.push(idx.len());
        }
        CsrMatrix::new(rows.len(), self.ncols, indptr, idx, val)
    }
}

fn check_compressed<P: Index, I, V>(what: &str, major: usize, indptr: &[P], indices: &[I], data: &[V]) -> Result<()> {
    if major.checked_add(1) != Some(indptr.len()) {
        return Err(DataError::Sparse(format!(
            "{what} indptr has {} entries, expected {}",
            indptr.len(),
            major as u128 + 1
        )));
    }
    if indices.len() != data.len() {
        return Err(DataError::Sparse(format!(
            "{what} indices ({}) and data ({}) differ in length",
            indices.len(),
            data.len()
        )));
    }
    Ok(())
}

/// `indptr[i]..indptr[i + 1]`, checked: non-negative, non-decreasing, inside the buffers.
fn compressed_range<P: Index>(indptr: &[P], i: usize, nnz: usize, what: &str) -> Result<(usize, usize)> {
    let a = indptr[i].to_usize();
    let b = indptr[i + 1].to_usize();
    match (a, b) {
        (Some(a), Some(b)) if a <= b && b <= nnz => Ok((a, b)),
        _ => Err(DataError::Sparse(format!(
            "indptr of {what} {i} does not describe a range inside the {nnz} stored values"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Dense;

    fn reference() -> CsrMatrix {
        // 4 × 5 with an empty row.
        CsrMatrix::from_dense(&dense())
    }

    fn dense() -> Dense<f32> {
        Dense::from_vec(4, 5, vec![0., 1., 0., 2., 0., 0., 0., 0., 0., 0., 3., 0., 4., 0., 5., 0., 6., 0., 0., 7.])
            .unwrap()
    }

    #[test]
    fn every_view_gathers_the_same_rows() {
        let m = reference();
        let rows = [3usize, 0, 2, 1];
        let want = m.gather(&rows).unwrap();
        // CSR with int64 indptr, int32 indices, float64 values.
        let ptr: Vec<i64> = m.indptr.iter().map(|&p| p as i64).collect();
        let idx: Vec<i32> = m.indices.iter().map(|&c| c as i32).collect();
        let val: Vec<f64> = m.data.iter().map(|&v| v as f64).collect();
        let csr = CsrView::new(4, 5, &ptr, &idx, &val).unwrap();
        assert_eq!(csr.gather(&rows).unwrap(), want);
        // CSC of the same matrix.
        let (mut cptr, mut cidx, mut cval) = (vec![0i32], Vec::<i32>::new(), Vec::<f32>::new());
        for c in 0..5u32 {
            for r in 0..4 {
                let (cols, vals) = m.row(r);
                if let Some(k) = cols.iter().position(|&x| x == c) {
                    cidx.push(r as i32);
                    cval.push(vals[k]);
                }
            }
            cptr.push(cidx.len() as i32);
        }
        let csc = CscView::new(4, 5, &cptr, &cidx, &cval).unwrap();
        assert_eq!(csc.gather(&rows).unwrap(), want);
        // Dense, C order and Fortran order.
        let dm = dense();
        let d: Vec<f32> = (0..4).flat_map(|r| (0..5).map(move |c| (r, c))).map(|(r, c)| dm.get(r, c)).collect();
        assert_eq!(DenseView::new(4, 5, &d, 5, 1).unwrap().gather(&rows).unwrap(), want);
        let f: Vec<i64> = (0..5).flat_map(|c| (0..4).map(move |r| (r, c))).map(|(r, c)| dm.get(r, c) as i64).collect();
        assert_eq!(DenseView::new(4, 5, &f, 1, 4).unwrap().gather(&rows).unwrap(), want);
    }

    #[test]
    fn malformed_buffers_are_errors_not_panics() {
        let ptr = [0i64, 2, 1];
        let idx = [0i32, 1];
        let val = [1f32, 1.];
        let v = CsrView::new(2, 3, &ptr, &idx, &val).unwrap();
        assert!(v.gather(&[1]).unwrap_err().to_string().contains("row 1"));
        let bad_col = CsrView::new(1, 1, &[0i32, 2], &[0i32, 5], &[1f32, 1.]).unwrap();
        assert!(bad_col.gather(&[0]).unwrap_err().to_string().contains("column index"));
        assert!(CsrView::new(3, 3, &ptr, &idx, &val).is_err());
        assert!(DenseView::new(3, 3, &[1f32; 8], 3, 1).is_err());
        assert!(v.gather(&[7]).unwrap_err().to_string().contains("row 7"));
        // Unsorted columns in a row are sorted in the copy.
        let u = CsrView::new(1, 3, &[0i32, 2], &[2i32, 0], &[5f32, 6.]).unwrap().gather(&[0]).unwrap();
        assert_eq!((u.indices.clone(), u.data.clone()), (vec![0, 2], vec![6., 5.]));
    }
}
