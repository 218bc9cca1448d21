//! One-dimensional LOESS as computed by Cleveland's `dloess` (the code behind R's `loess`
//! and `skmisc.loess`, which scanpy's `seurat_v3` flavor calls).
//!
//! Local regression of degree 1 or 2 with tricube weights over the `floor(n·span + 1e-5)`
//! nearest neighbours (the farthest of which gets weight 0), Gaussian family (no robustness
//! iterations). Two surfaces, as in `dloess`:
//!
//! * [`Surface::Direct`]: the local fit is evaluated exactly at every data point;
//! * [`Surface::Interpolate`] (the default of `skmisc` and hence of scanpy): the x range,
//!   widened by 0.5 % at each end, is cut into cells by a k-d tree (a cell is split at its
//!   median point while it holds more than `floor(n·span·cell)` points); the local fit and
//!   its slope are computed at the cell boundaries (vertices) and each data point gets the
//!   cubic Hermite interpolation between the two vertices of its cell.

#![allow(clippy::needless_range_loop)]

use crate::{invalid, Result};

/// How the fitted surface is evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Surface {
    /// k-d tree + cubic Hermite interpolation between vertex fits (dloess default).
    #[default]
    Interpolate,
    /// Exact local fit at every point.
    Direct,
}

/// Options of [`loess_fit`]. Defaults: span 0.75 as dloess; scanpy passes `span = 0.3`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoessOptions {
    /// Fraction of the points in each local neighbourhood.
    pub span: f64,
    /// Degree of the local polynomial (1 or 2).
    pub degree: usize,
    /// Surface evaluation.
    pub surface: Surface,
    /// Cell size factor of the k-d tree (dloess default 0.2).
    pub cell: f64,
}

impl Default for LoessOptions {
    fn default() -> Self {
        LoessOptions { span: 0.75, degree: 2, surface: Surface::Interpolate, cell: 0.2 }
    }
}

/// Fits `y` on `x` and returns the fitted values at the `x`.
pub fn loess_fit(x: &[f64], y: &[f64], opts: &LoessOptions) -> Result<Vec<f64>> {
    let step = "loess";
    let n = x.len();
    if y.len() != n {
        return Err(invalid(step, format!("x has {n} values, y has {}", y.len())));
    }
    if !(opts.degree == 1 || opts.degree == 2) {
        return Err(invalid(step, format!("degree must be 1 or 2, got {}", opts.degree)));
    }
    if !(opts.span > 0.0 && opts.span.is_finite()) {
        return Err(invalid(step, format!("span must be positive, got {}", opts.span)));
    }
    if let Some(i) = (0..n).find(|&i| !x[i].is_finite() || !y[i].is_finite()) {
        return Err(invalid(step, format!("non-finite value at point {i} (x = {}, y = {})", x[i], y[i])));
    }
    let nf = ((n as f64 * opts.span + 1e-5).floor() as usize).min(n);
    if nf <= opts.degree {
        return Err(invalid(
            step,
            format!(
                "span {} leaves {nf} points per neighbourhood for {n} points; too few for degree {}",
                opts.span, opts.degree
            ),
        ));
    }
    // points sorted by x
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let xs: Vec<f64> = order.iter().map(|&i| x[i]).collect();
    let ys: Vec<f64> = order.iter().map(|&i| y[i]).collect();
    let fit = LocalFit { xs: &xs, ys: &ys, nf, span: opts.span, degree: opts.degree };
    let mut out = vec![0.0; n];
    match opts.surface {
        Surface::Direct => {
            use rayon::prelude::*;
            let vals: Vec<Result<f64>> = xs.par_iter().map(|&q| fit.at(q).map(|v| v.0)).collect();
            for (k, v) in vals.into_iter().enumerate() {
                out[order[k]] = v?;
            }
        }
        Surface::Interpolate => {
            let tree = KdTree1::build(&xs, ((n as f64) * opts.span * opts.cell).floor() as usize);
            let mut vval = Vec::with_capacity(tree.vertices.len());
            for &v in &tree.vertices {
                vval.push(fit.at(v)?);
            }
            for (k, &q) in xs.iter().enumerate() {
                out[order[k]] = tree.interpolate(q, &vval);
            }
        }
    }
    Ok(out)
}

/// Local polynomial fits on sorted data.
struct LocalFit<'a> {
    xs: &'a [f64],
    ys: &'a [f64],
    nf: usize,
    span: f64,
    degree: usize,
}

impl LocalFit<'_> {
    /// (value, slope) of the local fit at `q`.
    fn at(&self, q: f64) -> Result<(f64, f64)> {
        let (xs, n, nf) = (self.xs, self.xs.len(), self.nf);
        // the nf nearest points form a window [a, b) of the sorted data
        let mut a = xs.partition_point(|&v| v < q);
        let mut b = a;
        while b - a < nf {
            if a == 0 {
                b += 1;
            } else if b == n || (q - xs[a - 1]) <= (xs[b] - q) {
                a -= 1;
            } else {
                b += 1;
            }
        }
        let d2 = |i: usize| (xs[i] - q) * (xs[i] - q);
        let rho = d2(a).max(d2(b - 1)) * self.span.max(1.0);
        if rho.is_nan() || rho <= 0.0 {
            return Err(invalid("loess", format!("all neighbours of x = {q} coincide (zero neighbourhood radius); too many tied x values for this span")));
        }
        let k = self.degree + 1;
        // weighted design rows: sqrt(w) * [1, dx, dx^2]; normal equations on equilibrated columns
        let mut rows: Vec<([f64; 3], f64)> = Vec::with_capacity(b - a);
        let mut colnorm = [0f64; 3];
        for i in a..b {
            let r = (d2(i) / rho).sqrt();
            if r >= 1.0 {
                continue;
            }
            let w = ((1.0 - r * r * r).powi(3)).sqrt();
            let dx = xs[i] - q;
            let row = [w, w * dx, w * dx * dx];
            for c in 0..k {
                colnorm[c] += row[c] * row[c];
            }
            rows.push((row, w * self.ys[i]));
        }
        for c in colnorm.iter_mut().take(k) {
            *c = if *c > 0.0 { c.sqrt() } else { 1.0 };
        }
        let mut ata = [[0f64; 3]; 3];
        let mut atb = [0f64; 3];
        for (row, t) in &rows {
            let r: Vec<f64> = (0..k).map(|c| row[c] / colnorm[c]).collect();
            for c1 in 0..k {
                atb[c1] += r[c1] * t;
                for c2 in 0..k {
                    ata[c1][c2] += r[c1] * r[c2];
                }
            }
        }
        let sol = solve_sym(&ata, &atb, k).ok_or_else(|| {
            invalid(
                "loess",
                format!("singular local fit at x = {q}: fewer than {k} distinct x values in the neighbourhood"),
            )
        })?;
        let value = sol[0] / colnorm[0];
        let slope = if k > 1 { sol[1] / colnorm[1] } else { 0.0 };
        Ok((value, slope))
    }
}

/// Solves a small symmetric positive system by Gaussian elimination with partial pivoting.
fn solve_sym(a: &[[f64; 3]; 3], b: &[f64; 3], k: usize) -> Option<[f64; 3]> {
    let mut m = [[0f64; 4]; 3];
    for i in 0..k {
        for j in 0..k {
            m[i][j] = a[i][j];
        }
        m[i][3] = b[i];
    }
    let scale = (0..k).map(|i| m[i][i].abs()).fold(0.0, f64::max);
    for col in 0..k {
        let p = (col..k).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))?;
        if m[p][col].abs() <= 1e-13 * scale {
            return None;
        }
        m.swap(col, p);
        for r in col + 1..k {
            let f = m[r][col] / m[col][col];
            for c in col..4 {
                m[r][c] -= f * m[col][c];
            }
        }
    }
    let mut x = [0f64; 3];
    for i in (0..k).rev() {
        let mut s = m[i][3];
        for j in i + 1..k {
            s -= m[i][j] * x[j];
        }
        x[i] = s / m[i][i];
    }
    Some(x)
}

/// The one-dimensional k-d tree of dloess (`ehg126`, `ehg124`).
struct KdTree1 {
    /// Vertex coordinates (bounding box first).
    vertices: Vec<f64>,
    /// Cells: split value and children, or a leaf with its two vertex indices.
    cells: Vec<Cell>,
}

enum Cell {
    Split { xi: f64, lo: usize, hi: usize },
    Leaf { v0: usize, v1: usize },
}

impl KdTree1 {
    fn build(xs: &[f64], fc: usize) -> Self {
        let n = xs.len();
        let (lo, hi) = (xs[0], xs[n - 1]);
        let mu = 0.005 * (hi - lo).max(1e-10 * lo.abs().max(hi.abs()) + 1e-30);
        let mut vertices = vec![lo - mu, hi + mu];
        let nvmax = n.max(200);
        let ncmax = nvmax;
        // breadth-first, as ehg124: (first point, last point, lower vertex, upper vertex)
        let mut pending: Vec<(usize, usize, usize, usize)> = vec![(0, n - 1, 0, 1)];
        let mut cells: Vec<Option<Cell>> = vec![None];
        let mut p = 0;
        while p < pending.len() {
            let (l, u, v0, v1) = pending[p];
            let diam = vertices[v1] - vertices[v0];
            let mut leaf =
                u - l < fc || diam <= 0.0 || ncmax < cells.len() + 2 || (nvmax as f64) < vertices.len() as f64 + 1.0;
            let mut m = (l + u) / 2;
            if !leaf {
                // move the split past tied values: offsets 0, 1, -1, 2, -2, ...
                let mut off: isize = 0;
                loop {
                    let pos = m as isize + off;
                    if pos >= u as isize || pos < l as isize {
                        break;
                    }
                    let pos = pos as usize;
                    if xs[pos] == xs[pos + 1] {
                        off = -off;
                        if off >= 0 {
                            off += 1;
                        }
                    } else {
                        m = pos;
                        break;
                    }
                }
                let xi = xs[m];
                leaf = vertices[v0] == xi || vertices[v1] == xi;
            }
            if leaf {
                cells[p] = Some(Cell::Leaf { v0, v1 });
            } else {
                let xi = xs[m];
                let vm = match vertices.iter().position(|&v| v == xi) {
                    Some(k) => k,
                    None => {
                        vertices.push(xi);
                        vertices.len() - 1
                    }
                };
                let (clo, chi) = (cells.len(), cells.len() + 1);
                cells.push(None);
                cells.push(None);
                pending.push((l, m, v0, vm));
                pending.push((m + 1, u, vm, v1));
                cells[p] = Some(Cell::Split { xi, lo: clo, hi: chi });
            }
            p += 1;
        }
        KdTree1 { vertices, cells: cells.into_iter().map(|c| c.expect("every cell is visited")).collect() }
    }

    /// Cubic Hermite interpolation of the vertex (value, slope) pairs at `z` (`ehg128`).
    fn interpolate(&self, z: f64, vval: &[(f64, f64)]) -> f64 {
        let mut j = 0;
        loop {
            match self.cells[j] {
                Cell::Split { xi, lo, hi } => j = if z <= xi { lo } else { hi },
                Cell::Leaf { v0, v1 } => {
                    let (a, b) = (self.vertices[v0], self.vertices[v1]);
                    let h = (z - a) / (b - a);
                    let phi0 = (1.0 - h) * (1.0 - h) * (1.0 + 2.0 * h);
                    let phi1 = h * h * (3.0 - 2.0 * h);
                    let psi0 = h * (1.0 - h) * (1.0 - h);
                    let psi1 = h * h * (h - 1.0);
                    return phi0 * vval[v0].0 + phi1 * vval[v1].0 + (psi0 * vval[v0].1 + psi1 * vval[v1].1) * (b - a);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reproduces_a_quadratic_exactly() {
        let x: Vec<f64> = (0..200).map(|i| (i as f64 * 0.37).sin() * 3.0).collect();
        let y: Vec<f64> = x.iter().map(|v| 1.0 - 2.0 * v + 0.5 * v * v).collect();
        for surface in [Surface::Direct, Surface::Interpolate] {
            let f = loess_fit(&x, &y, &LoessOptions { span: 0.3, surface, ..Default::default() }).unwrap();
            for (a, b) in f.iter().zip(&y) {
                assert!((a - b).abs() < 1e-8, "{surface:?}: {a} vs {b}");
            }
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(loess_fit(&[1.0, 2.0], &[1.0], &LoessOptions::default()).is_err());
        assert!(
            loess_fit(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0], &LoessOptions { span: 0.3, ..Default::default() }).is_err()
        );
        assert!(loess_fit(&[1.0, f64::NAN, 3.0, 4.0], &[1.0; 4], &LoessOptions::default()).is_err());
    }
}
