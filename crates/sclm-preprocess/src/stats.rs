//! Per-row and per-column sums of dense and CSR matrices (accumulated in `f64`, in parallel).

use rayon::prelude::*;
use sclm_data::Matrix;

/// Rows per parallel chunk for column reductions.
const CHUNK: usize = 2048;

/// Sums `part(chunk)` over the chunks of `items` (`chunk` items each), adding the parts in
/// chunk order with `add`. Parts are computed in parallel, one per thread at a time, so memory
/// holds as many parts as there are threads; as the chunks and the order of the additions are fixed, the result is
/// bit-identical from run to run and for any thread count (rayon's `reduce` associates the
/// parts in an order that depends on work stealing).
pub(crate) fn ordered_sum<S: Sync, T: Send>(
    items: &[S],
    chunk: usize,
    zero: T,
    part: impl Fn(&[S]) -> T + Sync,
    add: impl Fn(T, T) -> T,
) -> T {
    let chunks: Vec<&[S]> = items.chunks(chunk.max(1)).collect();
    let wave = rayon::current_num_threads().max(1);
    let mut acc = zero;
    for w in chunks.chunks(wave) {
        let parts: Vec<T> = w.par_iter().map(|c| part(c)).collect();
        for p in parts {
            acc = add(acc, p);
        }
    }
    acc
}

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
    let part = |chunk: &[usize]| {
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
    };
    ordered_sum(rows, CHUNK, ColStats::zeros(g), part, ColStats::add)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Values whose float sum depends on the order of additions: the ordered sum equals the
    /// sequential one over chunks, bit for bit, on any thread count.
    #[test]
    fn ordered_sum_fixes_the_order_of_additions() {
        let items: Vec<f64> =
            (0..64 * 50i32).map(|i| ((i * 7919 % 1000) as f64 - 500.0) * 10f64.powi(i % 17 - 8)).collect();
        let part = |c: &[f64]| c.iter().sum::<f64>();
        let sequential = items.chunks(64).map(part).fold(0.0, |a, b| a + b);
        for threads in [1, 2, 5] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            for _ in 0..5 {
                let s = pool.install(|| ordered_sum(&items, 64, 0.0, part, |a, b| a + b));
                assert_eq!(s.to_bits(), sequential.to_bits(), "{threads} threads");
            }
        }
        // The order matters for these values (otherwise the test would prove nothing).
        let reversed = items.chunks(64).rev().map(part).fold(0.0, |a, b| a + b);
        assert_ne!(reversed.to_bits(), sequential.to_bits());
    }
}
