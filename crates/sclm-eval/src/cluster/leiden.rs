//! Leiden community detection (Traag, Waltman & van Eck 2019) with the RB configuration
//! quality (modularity with a resolution parameter γ) on a weighted undirected graph.
//!
//! One pass repeats: fast local moving of nodes between communities, refinement of each
//! community into well-connected sub-communities (greedy merging of singletons, as
//! `leidenalg` does), and aggregation of the refined partition, the aggregate starting
//! from the unrefined communities; it stops when every community is a single aggregate
//! node. Passes are repeated from the last partition until the quality stops improving
//! (or `iterations` passes were run). Node visiting order is shuffled with a seed, so
//! results are deterministic for a given seed.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use sclm_data::CsrMatrix;
use serde::{Deserialize, Serialize};

use crate::error::{invalid, Result};

/// Leiden options.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LeidenOptions {
    /// Resolution γ (default 1.0; larger gives more, smaller communities).
    pub resolution: f64,
    /// Number of passes; a negative value runs until the partition stops improving
    /// (default −1).
    pub iterations: i32,
    /// Seed of the node visiting order (default 0).
    pub seed: u64,
}

impl Default for LeidenOptions {
    fn default() -> Self {
        LeidenOptions { resolution: 1.0, iterations: -1, seed: 0 }
    }
}

/// A partition found by Leiden.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partition {
    /// Community of each node, numbered by decreasing community size from 0.
    pub membership: Vec<usize>,
    /// Number of communities.
    pub n_communities: usize,
    /// Generalised modularity of the partition at the resolution used.
    pub quality: f64,
}

/// A weighted graph with explicit node strengths and self-loop weights (aggregates carry
/// their internal weight as self-loops).
struct Graph {
    start: Vec<usize>,
    nbr: Vec<u32>,
    w: Vec<f64>,
    strength: Vec<f64>,
    total: f64, // Σ strength = 2m
}

impl Graph {
    fn n(&self) -> usize {
        self.strength.len()
    }
    fn edges(&self, v: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        (self.start[v]..self.start[v + 1]).map(move |p| (self.nbr[p] as usize, self.w[p]))
    }
    fn from_csr(a: &CsrMatrix) -> Graph {
        let n = a.nrows;
        let mut start = vec![0usize];
        let mut nbr = Vec::with_capacity(a.nnz());
        let mut w = Vec::with_capacity(a.nnz());
        let mut strength = vec![0f64; n];
        for i in 0..n {
            let (idx, val) = a.row(i);
            for (&j, &v) in idx.iter().zip(val) {
                strength[i] += v as f64;
                if j as usize != i && v != 0.0 {
                    nbr.push(j);
                    w.push(v as f64);
                }
            }
            start.push(nbr.len());
        }
        let total = strength.iter().sum();
        Graph { start, nbr, w, strength, total }
    }

    /// Collapses each group of `part` (ids 0..k) into one node.
    fn aggregate(&self, part: &[usize], k: usize) -> Graph {
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
        for (v, &c) in part.iter().enumerate() {
            members[c].push(v);
        }
        let mut start = vec![0usize];
        let mut nbr = Vec::new();
        let mut w = Vec::new();
        let mut strength = vec![0f64; k];
        let mut acc = vec![0f64; k];
        let mut touched: Vec<usize> = Vec::new();
        for c in 0..k {
            for &v in &members[c] {
                strength[c] += self.strength[v];
                for (u, x) in self.edges(v) {
                    let d = part[u];
                    if d == c {
                        continue;
                    }
                    if acc[d] == 0.0 {
                        touched.push(d);
                    }
                    acc[d] += x;
                }
            }
            touched.sort_unstable();
            for &d in &touched {
                nbr.push(d as u32);
                w.push(acc[d]);
                acc[d] = 0.0;
            }
            touched.clear();
            start.push(nbr.len());
        }
        Graph { start, nbr, w, strength, total: self.total }
    }
}

/// Generalised modularity Q = Σᵢⱼ (Aᵢⱼ − γ kᵢkⱼ / 2m) δ(cᵢ, cⱼ) / 2m of a partition of the
/// graph `adj` (symmetric; diagonal entries count once). Equals igraph's `modularity` for
/// graphs without self-loops.
pub fn modularity(adj: &CsrMatrix, membership: &[usize], resolution: f64) -> Result<f64> {
    check_graph(adj)?;
    if membership.len() != adj.nrows {
        return invalid(format!("modularity: {} memberships for {} nodes", membership.len(), adj.nrows));
    }
    let k = membership.iter().max().map_or(0, |m| m + 1);
    let mut kc = vec![0f64; k];
    let mut inside = 0.0;
    let mut total = 0.0;
    for i in 0..adj.nrows {
        let (idx, val) = adj.row(i);
        for (&j, &v) in idx.iter().zip(val) {
            let v = v as f64;
            total += v;
            kc[membership[i]] += v;
            if membership[j as usize] == membership[i] {
                inside += v;
            }
        }
    }
    if total == 0.0 {
        return Ok(0.0);
    }
    Ok(inside / total - resolution * kc.iter().map(|x| x * x).sum::<f64>() / (total * total))
}

fn check_graph(adj: &CsrMatrix) -> Result<()> {
    if adj.nrows != adj.ncols {
        return invalid(format!("graph adjacency must be square, got {} x {}", adj.nrows, adj.ncols));
    }
    if adj.data.iter().any(|v| !v.is_finite() || *v < 0.0) {
        return invalid("graph adjacency has negative or non-finite weights");
    }
    Ok(())
}

/// Scratch space accumulating edge weights per community.
struct Acc {
    acc: Vec<f64>,
    seen: Vec<bool>,
    touched: Vec<usize>,
}

impl Acc {
    fn new(n: usize) -> Self {
        Acc { acc: vec![0f64; n], seen: vec![false; n], touched: Vec::new() }
    }
    fn add(&mut self, c: usize, x: f64) {
        if !self.seen[c] {
            self.seen[c] = true;
            self.touched.push(c);
        }
        self.acc[c] += x;
    }
    fn clear(&mut self) {
        for &c in &self.touched {
            self.acc[c] = 0.0;
            self.seen[c] = false;
        }
        self.touched.clear();
    }
}

/// Fast local moving; returns true if any node moved.
fn move_nodes(g: &Graph, comm: &mut [usize], gamma: f64, rng: &mut StdRng) -> bool {
    let n = g.n();
    let mut kc = vec![0f64; n];
    let mut size = vec![0usize; n];
    for v in 0..n {
        kc[comm[v]] += g.strength[v];
        size[comm[v]] += 1;
    }
    let mut empty: Vec<usize> = (0..n).filter(|&c| size[c] == 0).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let mut queue: std::collections::VecDeque<usize> = order.into();
    let mut queued = vec![true; n];
    let mut m = Acc::new(n);
    let scale = gamma / g.total;
    let mut moved_any = false;
    while let Some(v) = queue.pop_front() {
        queued[v] = false;
        let kv = g.strength[v];
        let own = comm[v];
        for (u, x) in g.edges(v) {
            m.add(comm[u], x);
        }
        kc[own] -= kv;
        size[own] -= 1;
        let mut best = own;
        let mut best_gain = m.acc[own] - scale * kv * kc[own];
        for &c in &m.touched {
            let gain = m.acc[c] - scale * kv * kc[c];
            if gain > best_gain {
                best_gain = gain;
                best = c;
            }
        }
        if size[own] > 0 && best_gain < 0.0 {
            // An empty community (gain 0) is better than any neighbouring one.
            best = empty.pop().unwrap_or(own);
        }
        if size[own] == 0 && best != own {
            empty.push(own);
        }
        kc[best] += kv;
        size[best] += 1;
        if best != own {
            comm[v] = best;
            moved_any = true;
            for (u, _) in g.edges(v) {
                if !queued[u] && comm[u] != best {
                    queued[u] = true;
                    queue.push_back(u);
                }
            }
        }
        m.clear();
    }
    moved_any
}

/// Renumbers community ids to 0..k in order of first appearance; returns k.
fn renumber(comm: &mut [usize]) -> usize {
    let mut map = std::collections::HashMap::new();
    for c in comm.iter_mut() {
        let next = map.len();
        *c = *map.entry(*c).or_insert(next);
    }
    map.len()
}

/// Refines each community of `comm` (ids 0..k) into well-connected sub-communities.
fn refine(g: &Graph, comm: &[usize], gamma: f64, rng: &mut StdRng) -> Vec<usize> {
    let n = g.n();
    let scale = gamma / g.total;
    let mut refined: Vec<usize> = (0..n).collect();
    let mut kc_ref: Vec<f64> = g.strength.clone();
    let mut singleton = vec![true; n];
    let k = comm.iter().max().map_or(0, |m| m + 1);
    let mut ks = vec![0f64; k];
    for v in 0..n {
        ks[comm[v]] += g.strength[v];
    }
    // External weight of each refined community to the rest of its community.
    let mut ext: Vec<f64> =
        (0..n).map(|v| g.edges(v).filter(|&(u, _)| comm[u] == comm[v]).map(|(_, x)| x).sum()).collect();
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(rng);
    let mut m = Acc::new(n);
    for v in order {
        if !singleton[v] {
            continue;
        }
        let s = comm[v];
        let kv = g.strength[v];
        if ext[v] < scale * kv * (ks[s] - kv) {
            continue;
        }
        // Weights to refined communities inside the same community.
        for (u, x) in g.edges(v) {
            if comm[u] != s {
                continue;
            }
            m.add(refined[u], x);
        }
        let own = refined[v];
        let mut best = own;
        let mut best_gain = 0.0;
        for &c in &m.touched {
            if c == own || ext[c] < scale * kc_ref[c] * (ks[s] - kc_ref[c]) {
                continue;
            }
            let gain = m.acc[c] - scale * kv * kc_ref[c];
            if gain >= best_gain {
                best_gain = gain;
                best = c;
            }
        }
        if best != own {
            let w_vc = m.acc[best];
            ext[best] = ext[best] + ext[own] - 2.0 * w_vc;
            kc_ref[best] += kv;
            kc_ref[own] = 0.0;
            refined[v] = best;
            singleton[v] = false;
            // Nodes already in `best` are no longer singletons.
            for (u, _) in g.edges(v) {
                if refined[u] == best {
                    singleton[u] = false;
                }
            }
        }
        m.clear();
    }
    refined
}

/// One Leiden pass from `init` (community per node of the original graph); returns the
/// new membership.
fn leiden_pass(g0: &Graph, init: &[usize], gamma: f64, rng: &mut StdRng) -> Vec<usize> {
    let mut comm = init.to_vec();
    renumber(&mut comm);
    let mut node_of: Vec<usize> = (0..g0.n()).collect(); // original node -> aggregate node
    let mut agg: Option<Graph> = None;
    loop {
        let g = agg.as_ref().unwrap_or(g0);
        move_nodes(g, &mut comm, gamma, rng);
        let k = renumber(&mut comm);
        if k == g.n() {
            break;
        }
        let mut refined = refine(g, &comm, gamma, rng);
        let kr = renumber(&mut refined);
        // Initial partition of the aggregate: the unrefined community of its members.
        let mut next = vec![0usize; kr];
        for v in 0..g.n() {
            next[refined[v]] = comm[v];
        }
        let new_g = g.aggregate(&refined, kr);
        for x in node_of.iter_mut() {
            *x = refined[*x];
        }
        comm = next;
        agg = Some(new_g);
    }
    node_of.iter().map(|&a| comm[a]).collect()
}

/// Runs Leiden on the weighted undirected graph `adj` (symmetric CSR, e.g. UMAP
/// connectivities).
pub fn leiden(adj: &CsrMatrix, opts: &LeidenOptions) -> Result<Partition> {
    check_graph(adj)?;
    if !(opts.resolution.is_finite() && opts.resolution >= 0.0) {
        return invalid(format!("Leiden resolution must be a non-negative number, got {}", opts.resolution));
    }
    let g = Graph::from_csr(adj);
    let n = g.n();
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut membership: Vec<usize> = (0..n).collect();
    let mut quality = modularity(adj, &membership, opts.resolution)?;
    if g.total > 0.0 {
        let mut it = 0;
        loop {
            let next = leiden_pass(&g, &membership, opts.resolution, &mut rng);
            let q = modularity(adj, &next, opts.resolution)?;
            it += 1;
            let improved = q > quality + 1e-12;
            if q >= quality {
                membership = next;
                quality = q;
            }
            if !improved || (opts.iterations >= 0 && it >= opts.iterations) {
                break;
            }
        }
    }
    // Number communities by decreasing size (ties: first appearance).
    let k = renumber(&mut membership);
    let mut sizes = vec![0usize; k];
    for &c in &membership {
        sizes[c] += 1;
    }
    let mut rank: Vec<usize> = (0..k).collect();
    rank.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    let mut new_id = vec![0usize; k];
    for (r, &c) in rank.iter().enumerate() {
        new_id[c] = r;
    }
    let membership: Vec<usize> = membership.iter().map(|&c| new_id[c]).collect();
    Ok(Partition { membership, n_communities: k, quality })
}
