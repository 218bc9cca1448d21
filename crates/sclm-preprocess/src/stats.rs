//! Per-row and per-column sums of dense and CSR matrices (accumulated in `f64`, in parallel).

use rayon::prelude::*;
use sclm_data::Matrix;

/// Rows per parallel chunk for column reductions.
const CHUNK: usize = 2048;

/// Visits the non-zero entries `(column, value)` of row `i`.
#[inline]
pub(crate) fn for_row(x: &Matrix, i: usize, mut f: impl FnMut(usize, f32)) {
    match x {
        Matrix::Csr(c) => {
            let (idx, val) = c.row(i);
            for (&j, &v) in idx.iter().zip(val) {
                f(j as usize, v);
            }
        }
        Matrix::Dense(d) => {
            for (j, &v) in d.row(i).iter().enumerate() {
                if v != 0.0 {
                    f(j, v);
                }
            }
        }
    }
}

/// Per-row sum and number of non-zero values.
pub(crate) fn row_sums(x: &Matrix) -> (Vec<f64>, Vec<u32>) {
    let n = x.shape().0;
    (0..n)
        .into_par_iter()
        .map(|i| {
            let (mut s, mut k) = (0f64, 0u32);
            for_row(x, i, |_, v| {
                s += v as f64;
                k += 1;
            });
            (s, k)
        })
        .unzip()
}

/// Column sums, sums of squares and non-zero counts.
#[derive(Debug, Clone)]
pub(crate) struct ColStats {
    pub sum: Vec<f64>,
    pub sumsq: Vec<f64>,
    pub nnz: Vec<u32>,
}

impl ColStats {
    fn zeros(g: usize) -> Self {
        ColStats { sum: vec![0.0; g], sumsq: vec![0.0; g], nnz: vec![0; g] }
    }

    fn add(mut self, o: ColStats) -> Self {
        for j in 0..self.sum.len() {
            self.sum[j] += o.sum[j];
            self.sumsq[j] += o.sumsq[j];
            self.nnz[j] += o.nnz[j];
        }
        self
    }

    /// Means and unbiased (ddof = 1) variances over `n` rows, computed as scanpy does
    /// (`E[x²] − E[x]²`, scaled by `n / (n − 1)`).
    pub fn mean_var(&self, n: usize) -> (Vec<f64>, Vec<f64>) {
        let nf = n as f64;
        let mean: Vec<f64> = self.sum.iter().map(|s| s / nf).collect();
        let corr = if n > 1 { nf / (nf - 1.0) } else { 1.0 };
        let var = self.sumsq.iter().zip(&mean).map(|(s2, m)| (s2 / nf - m * m) * corr).collect();
        (mean, var)
    }
}

/// Column statistics over the rows listed in `rows` (all rows when `None`).
pub(crate) fn col_stats(x: &Matrix, rows: Option<&[usize]>) -> ColStats {
    let (n, g) = x.shape();
    let all: Vec<usize>;
    let rows = match rows {
        Some(r) => r,
        None => {
            all = (0..n).collect();
            &all
        }
    };
    rows.par_chunks(CHUNK)
        .map(|chunk| {
            let mut s = ColStats::zeros(g);
            for &i in chunk {
                for_row(x, i, |j, v| {
                    let v = v as f64;
                    s.sum[j] += v;
                    s.sumsq[j] += v * v;
                    s.nnz[j] += 1;
                });
            }
            s
        })
        .reduce(|| ColStats::zeros(g), ColStats::add)
}

/// The median as numpy computes it (mean of the two middle values for an even count).
pub(crate) fn median(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}
