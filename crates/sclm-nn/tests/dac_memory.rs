//! Peak heap memory of divide-and-conquer contrastive learning grows with the chunk, not with
//! the batch (CellLM §3.3.1). Counted with a global allocator wrapper; this file holds a single
//! test so that no other test allocates concurrently.
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use sclm_nn::burn::module::Module;
use sclm_nn::burn::nn::{Linear, LinearConfig};
use sclm_nn::burn::prelude::*;
use sclm_nn::burn::tensor::Distribution;
use sclm_nn::train::dac::{dac_contrastive_grads, DacConfig};

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        CURRENT.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static A: Counting = Counting;

#[derive(Module, Debug)]
struct Wide {
    a: Linear,
    b: Linear,
}

fn measure(f: impl FnOnce()) -> usize {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    f();
    PEAK.load(Ordering::Relaxed) - base
}

#[test]
fn peak_memory_grows_with_chunk_not_batch() {
    let dev = sclm_nn::train_device();
    // Wide hidden layer: the activations of one cell are 4096 floats, the output only 16.
    let m = Wide { a: LinearConfig::new(64, 4096).init(&dev), b: LinearConfig::new(4096, 16).init(&dev) };
    let embed = |m: &Wide, xs: &[Tensor<1>]| {
        let x = Tensor::stack::<2>(xs.to_vec(), 0);
        let h = m.b.forward(m.a.forward(x.clone()).tanh());
        let hp = m.b.forward(m.a.forward(x.mul_scalar(1.01)).tanh());
        Ok((h, hp))
    };
    let cells = |n: usize| -> Vec<Tensor<1>> {
        (0..n).map(|_| Tensor::<1>::random([64], Distribution::Normal(0.0, 1.0), &dev)).collect()
    };
    // Warm-up: one-time allocations (thread pools, lazily initialised weights) are not counted.
    {
        let xs = cells(64);
        drop(dac_contrastive_grads(&m, &xs, &DacConfig::new(32), embed).unwrap());
    }
    let mut figures = Vec::new();
    for n in [256usize, 1024] {
        let xs = cells(n);
        let dac = measure(|| {
            let out = dac_contrastive_grads(&m, &xs, &DacConfig::new(32), embed).unwrap();
            drop(out);
        });
        let e2e = measure(|| {
            let (h, hp) = embed(&m, &xs).unwrap();
            let g = sclm_nn::loss::info_nce(h, hp, 0.05, false).backward();
            drop(g);
        });
        figures.push((n, dac, e2e));
        eprintln!(
            "batch {n}: divide-and-conquer peak {:.1} MiB, end-to-end peak {:.1} MiB",
            dac as f64 / 1048576.0,
            e2e as f64 / 1048576.0
        );
    }
    let (small, large) = (figures[0], figures[1]);
    // End-to-end memory grows ~4× with 4× the batch (activations of every cell are kept).
    assert!(large.2 as f64 > 3.0 * small.2 as f64, "{figures:?}");
    // Divide-and-conquer keeps one chunk's activations; what still grows with the batch is the
    // loss itself (the T×T similarity matrix and the T×d embeddings), a small fraction here.
    assert!(large.1 < large.2 / 4, "{figures:?}");
    assert!(((large.1 - small.1) as f64) < 0.15 * (large.2 - small.2) as f64, "{figures:?}");
}
