//! `cargo run --release -p sclm-nn --example bench_engine -- [--threads N] [--iters N]
//! [--torch-python PATH] [--attention softmax|flow|performer] [--seq N] [--breakdown]`
use sclm_nn::attention::AttentionKind;
use sclm_nn::bench::{bench_breakdown, bench_encoder_layer, bench_torch, BenchConfig};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let mut cfg =
        BenchConfig::new().with_threads(Some(get("--threads").map(|t| t.parse().expect("--threads N")).unwrap_or(2)));
    if let Some(i) = get("--iters") {
        cfg = cfg.with_iters(i.parse().expect("--iters N"));
    }
    if let Some(s) = get("--seq") {
        cfg = cfg.with_seq(s.parse().expect("--seq N"));
    }
    cfg = cfg.with_attention(match get("--attention").as_deref() {
        Some("flow") => AttentionKind::Flow,
        Some("performer") => AttentionKind::Performer { n_features: None },
        _ => AttentionKind::Softmax,
    });
    if args.iter().any(|a| a == "--breakdown") {
        for (part, ms) in bench_breakdown(&cfg).expect("breakdown") {
            println!("{part}: {ms:.1} ms");
        }
    }
    let ours = bench_encoder_layer(&cfg).expect("benchmark");
    println!("{}", serde_json::to_string(&ours).unwrap());
    if let Some(py) = get("--torch-python") {
        match bench_torch(std::path::Path::new(&py), &cfg) {
            Ok(t) => {
                println!("{}", serde_json::to_string(&t).unwrap());
                println!(
                    "ratio sclm/torch: forward {:.2}x, forward+backward {:.2}x",
                    ours.forward_ms / t.forward_ms,
                    ours.forward_backward_ms / t.forward_backward_ms
                );
            }
            Err(e) => eprintln!("torch benchmark failed: {e}"),
        }
    }
}
