//! Timings of the evaluation pieces on synthetic Gaussian clusters.
//! cargo run --release -p sclm-eval --example eval_speed -- [n_cells=20000] [dims=50]

use std::time::Instant;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sclm_data::Dense;
use sclm_eval::cluster::{leiden, LeidenOptions};
use sclm_eval::neighbors::{connectivities, knn};
use sclm_eval::nndescent::{knn_nndescent, NnDescentOptions};
use sclm_eval::{evaluate_embedding, EvaluateOptions};

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let n = args.first().copied().unwrap_or(20_000);
    let d = args.get(1).copied().unwrap_or(50);
    let mut rng = StdRng::seed_from_u64(0);
    let labels: Vec<String> = (0..n).map(|i| format!("t{}", i % 12)).collect();
    let batches: Vec<String> = (0..n).map(|i| format!("b{}", (i / 12) % 3)).collect();
    let data: Vec<f32> = (0..n)
        .flat_map(|i| {
            let t = i % 12;
            (0..d).map(|j| if j % 12 == t { 3.0 } else { 0.0 } + rng.random::<f32>() * 2.0 - 1.0).collect::<Vec<_>>()
        })
        .collect();
    let x = Dense::from_vec(n, d, data).unwrap();
    let t = Instant::now();
    let exact = knn(&x, 15, true).unwrap();
    println!("exact kNN (k=15): {:.2}s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let approx = knn_nndescent(&x, 15, true, &NnDescentOptions::default()).unwrap();
    println!("NN-descent kNN (k=15): {:.2}s", t.elapsed().as_secs_f64());
    let hits: usize = (0..n).map(|i| approx.row(i).0.iter().filter(|j| exact.row(i).0.contains(j)).count()).sum();
    println!("NN-descent recall: {:.4}", hits as f64 / (n * 15) as f64);
    let t = Instant::now();
    let conn = connectivities(&exact);
    println!("connectivities: {:.2}s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    let p = leiden(&conn, &LeidenOptions::default()).unwrap();
    println!("Leiden (resolution 1): {:.2}s, {} communities", t.elapsed().as_secs_f64(), p.n_communities);
    let t = Instant::now();
    let rep = evaluate_embedding(&x, &labels, Some(&batches), &EvaluateOptions::default()).unwrap();
    println!("evaluate_embedding: {:.2}s\n{}", t.elapsed().as_secs_f64(), rep.to_table());
}
