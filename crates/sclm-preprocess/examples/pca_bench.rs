//! Times PCA, HVG and normalisation on a synthetic matrix.
//!
//! `cargo run --release -p sclm-preprocess --example pca_bench -- [cells] [genes] [density] [--quick]`
//! (defaults: 100000 cells, 2000 genes, density 0.1).

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sclm_data::{CsrMatrix, Matrix};
use sclm_preprocess::hvg::hvg_seurat_v3;
use sclm_preprocess::normalize::{log1p, normalize_total, scale, NormalizeOptions};
use sclm_preprocess::pca::PcaSolver;
use sclm_preprocess::{pca, PcaOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(100_000);
    let g: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(2000);
    let density: f64 = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(0.1);
    let mut rng = StdRng::seed_from_u64(1);
    // low-rank structure: 10 cell groups with different gene programmes
    let programmes: Vec<Vec<f64>> = (0..10).map(|_| (0..g).map(|_| rng.random::<f64>() * 3.0).collect()).collect();
    let mut indptr = vec![0usize];
    let (mut indices, mut data) = (Vec::new(), Vec::new());
    for i in 0..n {
        let p = &programmes[i % 10];
        for (j, &pj) in p.iter().enumerate() {
            if rng.random::<f64>() < density * pj / 1.5 {
                indices.push(j as u32);
                data.push((1.0 + (rng.random::<f64>() * 4.0 * pj).floor()) as f32);
            }
        }
        indptr.push(indices.len());
    }
    let mut x = Matrix::Csr(CsrMatrix::new(n, g, indptr, indices, data).unwrap());
    println!("matrix {n} x {g}, nnz {} ({} threads)", x.stored(), rayon::current_num_threads());
    let t = Instant::now();
    let rows: Vec<usize> = (0..n).collect();
    let h = hvg_seurat_v3(&x, &[rows], 1000.min(g), 0.3).unwrap();
    println!(
        "hvg seurat_v3: {:.2} s ({} genes)",
        t.elapsed().as_secs_f64(),
        h.highly_variable.iter().filter(|b| **b).count()
    );
    let t = Instant::now();
    normalize_total(&mut x, &NormalizeOptions { target_sum: Some(1e4), ..Default::default() }).unwrap();
    log1p(&mut x).unwrap();
    println!("normalize_total + log1p: {:.2} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let exact = pca(&x, 50, 0, &PcaOptions { solver: PcaSolver::CovarianceEigh, ..Default::default() }).unwrap();
    println!("pca sparse k=50 covariance_eigh (the auto choice here): {:.2} s", t.elapsed().as_secs_f64());
    let quick = args.iter().any(|a| a == "--quick");
    let settings: &[(usize, usize)] = if quick { &[(20, 7)] } else { &[(30, 12), (20, 7), (10, 4)] };
    for &(over, iters) in settings {
        let t = Instant::now();
        let opts = PcaOptions {
            solver: PcaSolver::Randomized,
            n_oversamples: over,
            n_power_iter: iters,
            ..Default::default()
        };
        let p = pca(&x, 50, 0, &opts).unwrap();
        let secs = t.elapsed().as_secs_f64();
        let dev = exact.variance.iter().zip(&p.variance).map(|(a, b)| ((a - b) / a).abs()).fold(0.0, f64::max);
        println!("pca sparse k=50 randomized oversamples={over} power_iter={iters}: {secs:.2} s; max rel variance error vs covariance_eigh {dev:.2e}");
    }
    let t = Instant::now();
    let (d, _, _) = scale(&x, true, Some(10.0)).unwrap();
    println!("scale (dense output): {:.2} s", t.elapsed().as_secs_f64());
    let d = Matrix::Dense(d);
    let t = Instant::now();
    let p = pca(&d, 50, 0, &PcaOptions::default()).unwrap();
    println!(
        "pca dense (scaled) k=50 covariance_eigh: {:.2} s; variance_ratio[0..3] = {:?}",
        t.elapsed().as_secs_f64(),
        &p.variance_ratio[..3]
    );
}
