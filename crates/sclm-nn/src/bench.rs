//! Engine benchmark: one transformer encoder layer (default d 512, 8 heads, ffn 2048,
//! batch 8 × 512 tokens), forward and forward + backward, and the same layer in PyTorch
//! through a user-supplied Python interpreter.
use std::path::Path;
use std::time::Instant;

use burn::prelude::*;
use burn::tensor::Distribution;
use serde::{Deserialize, Serialize};

use crate::attention::AttentionKind;
use crate::encoder::EncoderLayerConfig;
use crate::NnError;

/// The PyTorch counterpart script (also in `scripts/bench_engine_torch.py`).
pub const TORCH_SCRIPT: &str = include_str!("../scripts/bench_engine_torch.py");

/// Benchmark settings.
#[derive(Config, Debug)]
pub struct BenchConfig {
    /// Model dimension (default 512).
    #[config(default = 512)]
    pub d_model: usize,
    /// Heads (default 8).
    #[config(default = 8)]
    pub n_heads: usize,
    /// Feed-forward dimension (default 2048).
    #[config(default = 2048)]
    pub d_ff: usize,
    /// Batch size (default 8).
    #[config(default = 8)]
    pub batch: usize,
    /// Tokens per sequence (default 512).
    #[config(default = 512)]
    pub seq: usize,
    /// Untimed warm-up iterations (default 2).
    #[config(default = 2)]
    pub warmup: usize,
    /// Timed iterations; the median is reported (default 5).
    #[config(default = 5)]
    pub iters: usize,
    /// Worker threads (default none = rayon's default, all cores or `RAYON_NUM_THREADS`).
    #[config(default = "None")]
    pub threads: Option<usize>,
    /// Attention kind (default softmax, matching PyTorch's layer).
    #[config(default = "AttentionKind::Softmax")]
    pub attention: AttentionKind,
}

/// Timings of one engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BenchResult {
    /// Engine name.
    pub engine: String,
    /// Threads used.
    pub threads: usize,
    /// Median forward time (ms).
    pub forward_ms: f64,
    /// Median forward + backward time (ms).
    pub forward_backward_ms: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    v[v.len() / 2]
}

fn run(cfg: &BenchConfig) -> BenchResult {
    let layer_cfg = EncoderLayerConfig::new(cfg.d_model, cfg.n_heads, cfg.d_ff)
        .with_dropout(0.0)
        .with_attention(cfg.attention.clone());
    let timed = |f: &dyn Fn()| {
        for _ in 0..cfg.warmup {
            f();
        }
        median(
            (0..cfg.iters.max(1))
                .map(|_| {
                    let t = Instant::now();
                    f();
                    t.elapsed().as_secs_f64() * 1e3
                })
                .collect(),
        )
    };
    let dev = crate::cpu_device();
    let layer = layer_cfg.init(&dev);
    let x = Tensor::<3>::random([cfg.batch, cfg.seq, cfg.d_model], Distribution::Normal(0.0, 1.0), &dev);
    let forward_ms = timed(&|| {
        let _ = crate::util::scalar(layer.forward(x.clone(), None).sum());
    });
    let tdev = crate::train_device();
    let tlayer = layer_cfg.init(&tdev);
    let tx = Tensor::<3>::random([cfg.batch, cfg.seq, cfg.d_model], Distribution::Normal(0.0, 1.0), &tdev);
    let forward_backward_ms = timed(&|| {
        let grads = tlayer.forward(tx.clone(), None).sum().backward();
        let g = tlayer.ff_in.weight.val().grad(&grads).expect("gradient");
        let _ = crate::util::scalar(g.sum());
    });
    BenchResult {
        engine: "sclm-nn (burn 0.22.1, flex)".into(),
        threads: rayon::current_num_threads(),
        forward_ms,
        forward_backward_ms,
    }
}

/// Times one encoder layer (release builds give meaningful figures).
pub fn bench_encoder_layer(cfg: &BenchConfig) -> Result<BenchResult, NnError> {
    match cfg.threads {
        Some(n) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(n)
                .build()
                .map_err(|e| NnError::Config(format!("cannot build a {n}-thread pool: {e}")))?;
            Ok(pool.install(|| run(cfg)))
        }
        None => Ok(run(cfg)),
    }
}

/// Forward-time breakdown of the layer's parts (median ms each): the four attention
/// projections, the attention core (scores, softmax, weighted sum), the feed-forward block,
/// and the two norms with the residual additions. Helps to see what limits the engine.
pub fn bench_breakdown(cfg: &BenchConfig) -> Result<Vec<(String, f64)>, NnError> {
    let work = || {
        let dev = crate::cpu_device();
        let (b, n, d, h) = (cfg.batch, cfg.seq, cfg.d_model, cfg.n_heads);
        let x = Tensor::<3>::random([b, n, d], Distribution::Normal(0.0, 1.0), &dev);
        let w = |i: usize, o: usize| Tensor::<2>::random([i, o], Distribution::Normal(0.0, 0.02), &dev);
        let (wq, w1, w2) = (w(d, d), w(d, cfg.d_ff), w(cfg.d_ff, d));
        let timed = |f: &dyn Fn() -> f64| {
            for _ in 0..cfg.warmup {
                f();
            }
            median(
                (0..cfg.iters.max(1))
                    .map(|_| {
                        let t = Instant::now();
                        f();
                        t.elapsed().as_secs_f64() * 1e3
                    })
                    .collect(),
            )
        };
        let x2 = x.clone().reshape([b * n, d]);
        let proj = timed(&|| {
            let mut acc = 0.0;
            for _ in 0..4 {
                acc += crate::util::scalar(x2.clone().matmul(wq.clone()).sum());
            }
            acc
        });
        let q = x.clone().reshape([b, n, h, d / h]).swap_dims(1, 2);
        let core = timed(&|| {
            let s = q.clone().matmul(q.clone().swap_dims(2, 3)).div_scalar(((d / h) as f64).sqrt());
            let p = burn::tensor::activation::softmax(s, 3);
            crate::util::scalar(p.matmul(q.clone()).sum())
        });
        let ffn = timed(&|| {
            let a = burn::tensor::activation::gelu(x2.clone().matmul(w1.clone()));
            crate::util::scalar(a.matmul(w2.clone()).sum())
        });
        let ln = burn::nn::LayerNormConfig::new(d).init(&dev);
        let norms = timed(&|| {
            let y = ln.forward(x.clone()) + x.clone();
            crate::util::scalar((ln.forward(y.clone()) + y).sum())
        });
        vec![
            ("projections (4 × [b·n, d] @ [d, d])".to_string(), proj),
            ("attention core (QKᵀ, softmax, PV)".to_string(), core),
            ("feed-forward (2 matmuls + GELU)".to_string(), ffn),
            ("2 LayerNorms + residual adds".to_string(), norms),
        ]
    };
    match cfg.threads {
        Some(t) => {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(t)
                .build()
                .map_err(|e| NnError::Config(format!("cannot build a {t}-thread pool: {e}")))?;
            Ok(pool.install(work))
        }
        None => Ok(work()),
    }
}

/// Runs the PyTorch counterpart with `python` (an interpreter with torch installed).
pub fn bench_torch(python: &Path, cfg: &BenchConfig) -> Result<BenchResult, NnError> {
    let dir = std::env::temp_dir().join(format!("sclm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| NnError::io(&dir, e))?;
    let script = dir.join("bench_engine_torch.py");
    std::fs::write(&script, TORCH_SCRIPT).map_err(|e| NnError::io(&script, e))?;
    let threads = cfg.threads.unwrap_or_else(rayon::current_num_threads);
    let out = std::process::Command::new(python)
        .arg(&script)
        .args(["--d-model", &cfg.d_model.to_string(), "--heads", &cfg.n_heads.to_string()])
        .args(["--d-ff", &cfg.d_ff.to_string(), "--batch", &cfg.batch.to_string(), "--seq", &cfg.seq.to_string()])
        .args(["--warmup", &cfg.warmup.to_string(), "--iters", &cfg.iters.to_string()])
        .args(["--threads", &threads.to_string()])
        .output()
        .map_err(|e| NnError::io(python, e));
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    if !out.status.success() {
        return Err(NnError::Config(format!(
            "{} failed: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).lines().last().unwrap_or("")
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or("");
    serde_json::from_str(line)
        .map_err(|e| NnError::Json { path: python.display().to_string(), message: format!("{e}: {line}") })
}
