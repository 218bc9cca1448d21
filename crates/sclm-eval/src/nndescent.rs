//! Approximate kNN graphs by NN-descent (Dong, Moses & Li 2011) for large cell numbers.
//!
//! Starts from random neighbours and repeatedly compares the neighbours (and reverse
//! neighbours) of every cell with each other ("local join"), keeping the k closest seen,
//! until fewer than `delta · n · k` lists change. Distances are computed in parallel per
//! block of cells; list updates run in a fixed order, so results are deterministic for a seed.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rayon::prelude::*;
use sclm_data::Dense;
use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result};
use crate::neighbors::{knn, sqdist, KnnGraph};

/// NN-descent options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NnDescentOptions {
    /// Maximum rounds (default 12).
    pub max_iters: usize,
    /// Stop when fewer than delta · n · k updates happen in a round (default 0.001).
    pub delta: f64,
    /// Seed (default 0).
    pub seed: u64,
}

impl Default for NnDescentOptions {
    fn default() -> Self {
        NnDescentOptions { max_iters: 12, delta: 0.001, seed: 0 }
    }
}

/// Above this many cells [`knn_auto`] switches from exact to NN-descent.
pub const EXACT_KNN_MAX_CELLS: usize = 20_000;

#[derive(Clone, Copy)]
struct Entry {
    d: f32,
    j: u32,
    new: bool,
}

/// Inserts (d, j) into a list sorted by distance, keeping its length; true if inserted.
fn push(list: &mut [Entry], d: f32, j: u32) -> bool {
    let last = list.len() - 1;
    if d >= list[last].d || list.iter().any(|e| e.j == j) {
        return false;
    }
    let mut p = last;
    while p > 0 && list[p - 1].d > d {
        list[p] = list[p - 1];
        p -= 1;
    }
    list[p] = Entry { d, j, new: true };
    true
}

/// Approximate kNN (NN-descent), same layout and conventions as [`knn`].
pub fn knn_nndescent(x: &Dense<f32>, k: usize, include_self: bool, opts: &NnDescentOptions) -> Result<KnnGraph> {
    let n = x.nrows;
    let kk = if include_self { k.saturating_sub(1) } else { k };
    if k == 0 || kk >= n || (include_self && k > n) {
        return invalid(format!("kNN: k = {k} neighbours requested for {n} cells"));
    }
    if x.data.iter().any(|v| !v.is_finite()) {
        return invalid("kNN: embedding contains non-finite values");
    }
    let dist = |a: usize, b: usize| sqdist(x.row(a), x.row(b)).sqrt() as f32;
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut lists: Vec<Vec<Entry>> = Vec::with_capacity(n);
    if kk > 0 {
        for i in 0..n {
            let mut l = vec![Entry { d: f32::INFINITY, j: u32::MAX, new: true }; kk];
            while l[kk - 1].j == u32::MAX {
                let j = rng.random_range(0..n);
                if j != i {
                    push(&mut l, dist(i, j), j as u32);
                }
            }
            lists.push(l);
        }
        let sample = kk;
        for _ in 0..opts.max_iters {
            // New / old candidate lists, with reverse neighbours (sampled).
            let mut new_c: Vec<Vec<u32>> = vec![Vec::new(); n];
            let mut old_c: Vec<Vec<u32>> = vec![Vec::new(); n];
            for i in 0..n {
                for e in lists[i].iter_mut() {
                    if e.new {
                        new_c[i].push(e.j);
                        new_c[e.j as usize].push(i as u32);
                        e.new = false;
                    } else {
                        old_c[i].push(e.j);
                        old_c[e.j as usize].push(i as u32);
                    }
                }
            }
            for c in new_c.iter_mut().chain(old_c.iter_mut()) {
                c.sort_unstable();
                c.dedup();
                if c.len() > 2 * sample {
                    c.shuffle(&mut rng);
                    c.truncate(2 * sample);
                }
            }
            let mut updates = 0usize;
            for block in (0..n).collect::<Vec<_>>().chunks(2048) {
                let pairs: Vec<Vec<(u32, u32, f32)>> = block
                    .par_iter()
                    .map(|&v| {
                        let (nc, oc) = (&new_c[v], &old_c[v]);
                        let mut out = Vec::new();
                        for (a, &p) in nc.iter().enumerate() {
                            for &q in nc[a + 1..].iter().chain(oc.iter()) {
                                if p != q {
                                    out.push((p, q, dist(p as usize, q as usize)));
                                }
                            }
                        }
                        out
                    })
                    .collect();
                for (p, q, d) in pairs.into_iter().flatten() {
                    updates += push(&mut lists[p as usize], d, q) as usize;
                    updates += push(&mut lists[q as usize], d, p) as usize;
                }
            }
            if (updates as f64) < opts.delta * n as f64 * kk as f64 {
                break;
            }
        }
    }
    let mut indices = Vec::with_capacity(n * k);
    let mut distances = Vec::with_capacity(n * k);
    for i in 0..n {
        if include_self {
            indices.push(i as u32);
            distances.push(0.0);
        }
        if kk > 0 {
            let mut l = lists[i].clone();
            l.sort_by(|a, b| a.d.total_cmp(&b.d).then(a.j.cmp(&b.j)));
            indices.extend(l.iter().map(|e| e.j));
            distances.extend(l.iter().map(|e| e.d));
        }
    }
    Ok(KnnGraph { k, indices, distances })
}

/// Exact kNN up to [`EXACT_KNN_MAX_CELLS`] cells, NN-descent above.
pub fn knn_auto(x: &Dense<f32>, k: usize, include_self: bool, seed: u64) -> Result<KnnGraph> {
    if x.nrows <= EXACT_KNN_MAX_CELLS {
        knn(x, k, include_self)
    } else {
        knn_nndescent(x, k, include_self, &NnDescentOptions { seed, ..Default::default() })
    }
}
