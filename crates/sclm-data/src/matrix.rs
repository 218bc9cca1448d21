//! Matrices: row-major dense and compressed sparse row (CSR).

use crate::{DataError, Result};

/// A row-major dense 2-D array.
#[derive(Debug, Clone, PartialEq)]
pub struct Dense<T> {
    /// Number of rows.
    pub nrows: usize,
    /// Number of columns.
    pub ncols: usize,
    /// Values, row after row (`nrows * ncols` of them).
    pub data: Vec<T>,
}

impl<T: Copy + Default> Dense<T> {
    /// A matrix of default values (zeros).
    pub fn zeros(nrows: usize, ncols: usize) -> Self {
        Dense { nrows, ncols, data: vec![T::default(); nrows * ncols] }
    }

    /// Builds a matrix from row-major data, checking its length.
    pub fn from_vec(nrows: usize, ncols: usize, data: Vec<T>) -> Result<Self> {
        if nrows.checked_mul(ncols) != Some(data.len()) {
            return Err(DataError::Shape {
                what: "dense matrix data".into(),
                expected: format!("{} values ({nrows} x {ncols})", nrows as u128 * ncols as u128),
                found: format!("{}", data.len()),
            });
        }
        Ok(Dense { nrows, ncols, data })
    }

    /// Row `i` as a slice.
    pub fn row(&self, i: usize) -> &[T] {
        &self.data[i * self.ncols..(i + 1) * self.ncols]
    }

    /// Row `i` as a mutable slice.
    pub fn row_mut(&mut self, i: usize) -> &mut [T] {
        &mut self.data[i * self.ncols..(i + 1) * self.ncols]
    }

    /// Writes the consecutive rows of row-major `values` to rows `rows[0]`, `rows[1]`, ... (the
    /// inverse of [`Dense::select_rows`]).
    ///
    /// # Panics
    /// If `values` does not hold `rows.len()` rows or a row index is out of range.
    pub fn set_rows(&mut self, rows: &[usize], values: &[T]) {
        assert_eq!(values.len(), rows.len() * self.ncols, "set_rows: values for {} rows", rows.len());
        for (&r, v) in rows.iter().zip(values.chunks_exact(self.ncols.max(1))) {
            self.row_mut(r).copy_from_slice(v);
        }
    }

    /// Value at row `i`, column `j`.
    pub fn get(&self, i: usize, j: usize) -> T {
        self.data[i * self.ncols + j]
    }

    /// Keeps the rows listed in `rows`, in that order.
    pub fn select_rows(&self, rows: &[usize]) -> Self {
        let mut data = Vec::with_capacity(rows.len() * self.ncols);
        for &r in rows {
            data.extend_from_slice(self.row(r));
        }
        Dense { nrows: rows.len(), ncols: self.ncols, data }
    }

    /// Keeps the columns listed in `cols`, in that order.
    pub fn select_cols(&self, cols: &[usize]) -> Self {
        let mut data = Vec::with_capacity(self.nrows * cols.len());
        for i in 0..self.nrows {
            let row = self.row(i);
            data.extend(cols.iter().map(|&c| row[c]));
        }
        Dense { nrows: self.nrows, ncols: cols.len(), data }
    }
}

/// A compressed sparse row matrix of `f32` values.
///
/// Invariants (checked by [`CsrMatrix::new`]): `indptr.len() == nrows + 1`, `indptr` is
/// non-decreasing from 0 to `nnz`, every column index is `< ncols`, and within each row the
/// column indices are strictly increasing (readers sort rows that arrive unsorted).
#[derive(Debug, Clone, PartialEq)]
pub struct CsrMatrix {
    /// Number of rows.
    pub nrows: usize,
    /// Number of columns.
    pub ncols: usize,
    /// Row pointers (`nrows + 1` offsets into `indices` / `data`).
    pub indptr: Vec<usize>,
    /// Column index of each stored value.
    pub indices: Vec<u32>,
    /// Stored values.
    pub data: Vec<f32>,
}

impl CsrMatrix {
    /// Builds a CSR matrix, validating its structure. Rows with unsorted column indices are
    /// sorted; duplicated column indices within a row are an error.
    pub fn new(
        nrows: usize,
        ncols: usize,
        indptr: Vec<usize>,
        mut indices: Vec<u32>,
        mut data: Vec<f32>,
    ) -> Result<Self> {
        if nrows.checked_add(1) != Some(indptr.len()) {
            return Err(DataError::Sparse(format!(
                "indptr has {} entries, expected {} (n_rows + 1)",
                indptr.len(),
                nrows as u128 + 1
            )));
        }
        if indices.len() != data.len() {
            return Err(DataError::Sparse(format!(
                "indices ({}) and data ({}) differ in length",
                indices.len(),
                data.len()
            )));
        }
        if indptr[0] != 0 || indptr[nrows] != data.len() {
            return Err(DataError::Sparse(format!(
                "indptr must run from 0 to nnz={}, runs from {} to {}",
                data.len(),
                indptr[0],
                indptr[nrows]
            )));
        }
        // Monotone from 0 to nnz: every row range below lies inside indices and data.
        if let Some(i) = indptr.windows(2).position(|w| w[1] < w[0]) {
            return Err(DataError::Sparse(format!(
                "indptr decreases at row {i} (from {} to {})",
                indptr[i],
                indptr[i + 1]
            )));
        }
        let mut perm: Vec<usize> = Vec::new();
        for i in 0..nrows {
            let (a, b) = (indptr[i], indptr[i + 1]);
            let row = &indices[a..b];
            if let Some(&c) = row.iter().find(|&&c| c as usize >= ncols) {
                return Err(DataError::Sparse(format!(
                    "column index {c} in row {i} is out of range (n_cols = {ncols})"
                )));
            }
            if !row.windows(2).all(|w| w[0] < w[1]) {
                perm.clear();
                perm.extend(0..b - a);
                perm.sort_by_key(|&k| row[k]);
                let ri: Vec<u32> = perm.iter().map(|&k| indices[a + k]).collect();
                let rd: Vec<f32> = perm.iter().map(|&k| data[a + k]).collect();
                if ri.windows(2).any(|w| w[0] == w[1]) {
                    return Err(DataError::Sparse(format!(
                        "row {i} stores column {} more than once",
                        ri.windows(2).find(|w| w[0] == w[1]).map(|w| w[0]).unwrap_or(0)
                    )));
                }
                indices[a..b].copy_from_slice(&ri);
                data[a..b].copy_from_slice(&rd);
            }
        }
        Ok(CsrMatrix { nrows, ncols, indptr, indices, data })
    }

    /// An empty (all-zero) matrix.
    pub fn zeros(nrows: usize, ncols: usize) -> Self {
        CsrMatrix { nrows, ncols, indptr: vec![0; nrows + 1], indices: vec![], data: vec![] }
    }

    /// Number of stored values.
    pub fn nnz(&self) -> usize {
        self.data.len()
    }

    /// Row `i` as (column indices, values).
    pub fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.indptr[i], self.indptr[i + 1]);
        (&self.indices[a..b], &self.data[a..b])
    }

    /// Converts a dense matrix, keeping non-zero values.
    pub fn from_dense(d: &Dense<f32>) -> Self {
        let mut indptr = Vec::with_capacity(d.nrows + 1);
        let mut indices = Vec::new();
        let mut data = Vec::new();
        indptr.push(0);
        for i in 0..d.nrows {
            for (j, &v) in d.row(i).iter().enumerate() {
                if v != 0.0 {
                    indices.push(j as u32);
                    data.push(v);
                }
            }
            indptr.push(data.len());
        }
        CsrMatrix { nrows: d.nrows, ncols: d.ncols, indptr, indices, data }
    }

    /// Expands to a dense matrix.
    pub fn to_dense(&self) -> Dense<f32> {
        let mut d = Dense::zeros(self.nrows, self.ncols);
        for i in 0..self.nrows {
            let (idx, val) = self.row(i);
            let row = d.row_mut(i);
            for (&c, &v) in idx.iter().zip(val) {
                row[c as usize] = v;
            }
        }
        d
    }

    /// Keeps the rows listed in `rows`, in that order.
    pub fn select_rows(&self, rows: &[usize]) -> Self {
        let mut indptr = Vec::with_capacity(rows.len() + 1);
        indptr.push(0);
        let mut indices = Vec::new();
        let mut data = Vec::new();
        for &r in rows {
            let (idx, val) = self.row(r);
            indices.extend_from_slice(idx);
            data.extend_from_slice(val);
            indptr.push(data.len());
        }
        CsrMatrix { nrows: rows.len(), ncols: self.ncols, indptr, indices, data }
    }

    /// Keeps the columns listed in `cols`, in that order (column `cols[k]` becomes column `k`;
    /// a column listed several times is repeated).
    pub fn select_cols(&self, cols: &[usize]) -> Self {
        // New positions of each old column: `targets[start[c]..start[c + 1]]`.
        let mut start = vec![0usize; self.ncols + 1];
        for &c in cols {
            start[c + 1] += 1;
        }
        for j in 0..self.ncols {
            start[j + 1] += start[j];
        }
        let mut targets = vec![0u32; cols.len()];
        let mut next = start.clone();
        for (k, &c) in cols.iter().enumerate() {
            targets[next[c]] = k as u32;
            next[c] += 1;
        }
        let mut indptr = Vec::with_capacity(self.nrows + 1);
        indptr.push(0);
        let mut indices = Vec::new();
        let mut data = Vec::new();
        let mut buf: Vec<(u32, f32)> = Vec::new();
        for i in 0..self.nrows {
            let (idx, val) = self.row(i);
            buf.clear();
            for (&c, &v) in idx.iter().zip(val) {
                let c = c as usize;
                buf.extend(targets[start[c]..start[c + 1]].iter().map(|&t| (t, v)));
            }
            buf.sort_unstable_by_key(|p| p.0);
            indices.extend(buf.iter().map(|p| p.0));
            data.extend(buf.iter().map(|p| p.1));
            indptr.push(data.len());
        }
        CsrMatrix { nrows: self.nrows, ncols: cols.len(), indptr, indices, data }
    }

    /// The transpose, as CSR (equivalently, this matrix in CSC form).
    pub fn transpose(&self) -> Self {
        let mut counts = vec![0usize; self.ncols + 1];
        for &c in &self.indices {
            counts[c as usize + 1] += 1;
        }
        for j in 0..self.ncols {
            counts[j + 1] += counts[j];
        }
        let indptr = counts.clone();
        let mut next = counts;
        let mut indices = vec![0u32; self.nnz()];
        let mut data = vec![0f32; self.nnz()];
        for i in 0..self.nrows {
            let (idx, val) = self.row(i);
            for (&c, &v) in idx.iter().zip(val) {
                let p = next[c as usize];
                indices[p] = i as u32;
                data[p] = v;
                next[c as usize] += 1;
            }
        }
        CsrMatrix { nrows: self.ncols, ncols: self.nrows, indptr, indices, data }
    }

    /// Stacks matrices with the same number of columns on top of each other.
    pub fn vstack(parts: &[CsrMatrix]) -> Result<Self> {
        let ncols = parts.first().map(|p| p.ncols).unwrap_or(0);
        let mut out = CsrMatrix::zeros(0, ncols);
        for p in parts {
            if p.ncols != ncols {
                return Err(DataError::Shape {
                    what: "vstack columns".into(),
                    expected: ncols.to_string(),
                    found: p.ncols.to_string(),
                });
            }
            let base = out.data.len();
            out.indptr.extend(p.indptr[1..].iter().map(|o| o + base));
            out.indices.extend_from_slice(&p.indices);
            out.data.extend_from_slice(&p.data);
            out.nrows += p.nrows;
        }
        Ok(out)
    }
}

/// The main matrix of an AnnData (`X`, a layer or `raw.X`).
#[derive(Debug, Clone, PartialEq)]
pub enum Matrix {
    /// Dense, row-major.
    Dense(Dense<f32>),
    /// Compressed sparse rows.
    Csr(CsrMatrix),
}

impl Matrix {
    /// (rows, columns).
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Matrix::Dense(d) => (d.nrows, d.ncols),
            Matrix::Csr(c) => (c.nrows, c.ncols),
        }
    }

    /// Number of stored values (all of them for a dense matrix).
    pub fn stored(&self) -> usize {
        match self {
            Matrix::Dense(d) => d.data.len(),
            Matrix::Csr(c) => c.nnz(),
        }
    }

    /// The stored values (for range checks and the like).
    pub fn values(&self) -> &[f32] {
        match self {
            Matrix::Dense(d) => &d.data,
            Matrix::Csr(c) => &c.data,
        }
    }

    /// A CSR copy (or a clone if already CSR).
    pub fn to_csr(&self) -> CsrMatrix {
        match self {
            Matrix::Dense(d) => CsrMatrix::from_dense(d),
            Matrix::Csr(c) => c.clone(),
        }
    }

    /// A dense copy.
    pub fn to_dense(&self) -> Dense<f32> {
        match self {
            Matrix::Dense(d) => d.clone(),
            Matrix::Csr(c) => c.to_dense(),
        }
    }

    /// Keeps the rows listed in `rows`, in that order.
    pub fn select_rows(&self, rows: &[usize]) -> Self {
        match self {
            Matrix::Dense(d) => Matrix::Dense(d.select_rows(rows)),
            Matrix::Csr(c) => Matrix::Csr(c.select_rows(rows)),
        }
    }

    /// Keeps the columns listed in `cols`, in that order.
    pub fn select_cols(&self, cols: &[usize]) -> Self {
        match self {
            Matrix::Dense(d) => Matrix::Dense(d.select_cols(cols)),
            Matrix::Csr(c) => Matrix::Csr(c.select_cols(cols)),
        }
    }

    /// True when every stored value is a non-negative integer (raw counts).
    pub fn looks_like_counts(&self) -> bool {
        self.values().iter().all(|&v| v >= 0.0 && v.fract() == 0.0)
    }
}

/// A typed dense 2-D array, as stored in `obsm` / `varm`.
#[derive(Debug, Clone, PartialEq)]
pub enum Array2 {
    /// Single precision.
    F32(Dense<f32>),
    /// Double precision.
    F64(Dense<f64>),
    /// Integers.
    I64(Dense<i64>),
}

impl Array2 {
    /// (rows, columns).
    pub fn shape(&self) -> (usize, usize) {
        match self {
            Array2::F32(d) => (d.nrows, d.ncols),
            Array2::F64(d) => (d.nrows, d.ncols),
            Array2::I64(d) => (d.nrows, d.ncols),
        }
    }

    /// Converts to `f32`.
    pub fn to_f32(&self) -> Dense<f32> {
        match self {
            Array2::F32(d) => d.clone(),
            Array2::F64(d) => {
                Dense { nrows: d.nrows, ncols: d.ncols, data: d.data.iter().map(|&v| v as f32).collect() }
            }
            Array2::I64(d) => {
                Dense { nrows: d.nrows, ncols: d.ncols, data: d.data.iter().map(|&v| v as f32).collect() }
            }
        }
    }

    /// Converts to `f64`.
    pub fn to_f64(&self) -> Dense<f64> {
        match self {
            Array2::F32(d) => {
                Dense { nrows: d.nrows, ncols: d.ncols, data: d.data.iter().map(|&v| v as f64).collect() }
            }
            Array2::F64(d) => d.clone(),
            Array2::I64(d) => {
                Dense { nrows: d.nrows, ncols: d.ncols, data: d.data.iter().map(|&v| v as f64).collect() }
            }
        }
    }

    /// Keeps the rows listed in `rows`, in that order.
    pub fn select_rows(&self, rows: &[usize]) -> Self {
        match self {
            Array2::F32(d) => Array2::F32(d.select_rows(rows)),
            Array2::F64(d) => Array2::F64(d.select_rows(rows)),
            Array2::I64(d) => Array2::I64(d.select_rows(rows)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csr_sorts_unsorted_rows_and_rejects_bad_structure() {
        let m = CsrMatrix::new(2, 4, vec![0, 3, 4], vec![3, 0, 2, 1], vec![3., 0.5, 2., 1.]).unwrap();
        assert_eq!(m.row(0), (&[0u32, 2, 3][..], &[0.5f32, 2., 3.][..]));
        assert!(CsrMatrix::new(1, 2, vec![0, 1], vec![5], vec![1.]).is_err());
        assert!(CsrMatrix::new(1, 2, vec![0, 2], vec![1, 1], vec![1., 2.]).is_err());
        assert!(CsrMatrix::new(2, 2, vec![0, 1], vec![1], vec![1.]).is_err());
        // Not monotone, with a middle pointer past nnz: an error, not an out-of-bounds slice.
        let e = CsrMatrix::new(2, 2, vec![0, 5, 2], vec![0, 1], vec![1., 2.]).unwrap_err();
        assert!(e.to_string().contains("indptr decreases at row 1 (from 5 to 2)"), "{e}");
        assert!(CsrMatrix::new(usize::MAX, 2, vec![0], vec![], vec![]).is_err());
        assert!(Dense::from_vec(usize::MAX, 2, vec![0f32; 2]).is_err());
    }

    #[test]
    fn set_rows_inverts_select_rows() {
        let d = Dense::from_vec(3, 2, vec![1., 2., 3., 4., 5., 6.]).unwrap();
        let rows = [2, 0, 1];
        let mut back = Dense::zeros(3, 2);
        back.set_rows(&rows, &d.select_rows(&rows).data);
        assert_eq!(back, d);
    }

    #[test]
    fn dense_csr_transpose_and_selection_agree() {
        let d = Dense::from_vec(3, 3, vec![1., 0., 2., 0., 0., 3., 4., 5., 0.]).unwrap();
        let c = CsrMatrix::from_dense(&d);
        assert_eq!(c.to_dense(), d);
        let t = c.transpose().to_dense();
        for i in 0..3 {
            for j in 0..3 {
                assert_eq!(t.get(i, j), d.get(j, i));
            }
        }
        assert_eq!(c.select_cols(&[2, 0]).to_dense(), d.select_cols(&[2, 0]));
        assert_eq!(c.select_cols(&[2, 0, 2, 2]).to_dense(), d.select_cols(&[2, 0, 2, 2]));
        assert_eq!(c.select_rows(&[2, 1]).to_dense(), d.select_rows(&[2, 1]));
        let s = CsrMatrix::vstack(&[c.select_rows(&[0]), c.select_rows(&[1, 2])]).unwrap();
        assert_eq!(s, c);
    }
}
