//! GEMM throughput of the CPU backend at the CellPLM 85M shapes (10,000 cells × 1,024 / 2,048
//! features), best of 5: `cargo run --release -p sclm-nn --example gemm_probe`. Compare with
//! `--no-default-features` to see what the AVX-512 kernels (`x86-v4`) bring.
use burn::prelude::*;
use burn::tensor::Distribution;
use std::time::Instant;
fn main() {
    let dev = sclm_nn::cpu_device();
    for (m, k, n) in [(10000usize, 1024usize, 1024usize), (10000, 1024, 2048), (10000, 2048, 1024)] {
        let a = Tensor::<2>::random([m, k], Distribution::Normal(0.0, 1.0), &dev);
        let b = Tensor::<2>::random([k, n], Distribution::Normal(0.0, 1.0), &dev);
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            let c = a.clone().matmul(b.clone());
            let _ = c.into_data();
            best = best.min(t.elapsed().as_secs_f64());
        }
        println!("{m} {k} {n} {:.1} ms {:.1} GFLOP/s", best * 1e3, 2.0 * (m * k * n) as f64 / best / 1e9);
    }
}
