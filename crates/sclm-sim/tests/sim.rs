//! Behavioural tests of the simulator on small configs.

use sclm_data::{Column, CsrMatrix, Matrix, Value};
use sclm_sim::{simulate, PerturbConfig, SimConfig, SimStream, SpatialConfig, CONTROL};

fn small(seed: u64) -> SimConfig {
    SimConfig { n_cells: 300, n_genes: 400, seed, ..SimConfig::default() }
}

fn csr(m: &Matrix) -> &CsrMatrix {
    match m {
        Matrix::Csr(c) => c,
        Matrix::Dense(_) => panic!("X should be CSR"),
    }
}

fn codes(c: &Column) -> Vec<usize> {
    match c {
        Column::Categorical { codes, .. } => codes.iter().map(|&x| x as usize).collect(),
        other => panic!("expected a categorical column, got {}", other.kind()),
    }
}

/// Dense cells × genes copy of a CSR matrix, as f64.
fn dense(m: &CsrMatrix) -> Vec<Vec<f64>> {
    (0..m.nrows)
        .map(|i| {
            let mut row = vec![0.0; m.ncols];
            let (idx, val) = m.row(i);
            for (&j, &v) in idx.iter().zip(val) {
                row[j as usize] = v as f64;
            }
            row
        })
        .collect()
}

/// Mean of each gene over the given cells.
fn gene_means(x: &[Vec<f64>], cells: &[usize]) -> Vec<f64> {
    let g = x[0].len();
    let mut m = vec![0.0; g];
    for &c in cells {
        for (a, v) in m.iter_mut().zip(&x[c]) {
            *a += v;
        }
    }
    m.iter().map(|v| v / cells.len().max(1) as f64).collect()
}

#[test]
fn same_seed_same_data_different_seed_differs() {
    let a = simulate(&small(7)).unwrap();
    let b = simulate(&small(7)).unwrap();
    let c = simulate(&small(8)).unwrap();
    assert_eq!(a.adata, b.adata);
    assert_ne!(csr(&a.adata.x), csr(&c.adata.x));
    assert_ne!(a.adata.obs.get("cell_type"), c.adata.obs.get("cell_type"));
}

#[test]
fn chunks_do_not_depend_on_chunk_size_and_match_simulate() {
    let cfg =
        SimConfig { spatial: Some(SpatialConfig::default()), perturbation: Some(PerturbConfig::default()), ..small(3) };
    let sim = simulate(&cfg).unwrap();
    let stream = SimStream::new(&cfg).unwrap();
    for size in [1, 37, 300, 1000] {
        let chunks: Vec<_> = stream.chunks(size).collect::<Result<_, _>>().unwrap();
        assert_eq!(chunks.len(), 300usize.div_ceil(size));
        let parts: Vec<CsrMatrix> = chunks.iter().map(|c| c.counts.clone()).collect();
        let x = CsrMatrix::vstack(&parts).unwrap();
        assert_eq!(&x, csr(&sim.adata.x), "chunk size {size}");
        let first = &chunks[chunks.len() - 1];
        let rows: Vec<usize> = (first.start..first.start + first.counts.nrows).collect();
        assert_eq!(first.obs, sim.adata.obs.select_rows(&rows));
        let sp = first.spatial.as_ref().unwrap();
        assert_eq!(sp.nrows, rows.len());
    }
    assert_eq!(stream.obs(), sim.adata.obs);
    assert_eq!(stream.var(), sim.adata.var);
}

#[test]
fn counts_are_nonnegative_integers_and_structure_is_valid() {
    let sim = simulate(&small(1)).unwrap();
    sim.adata.validate().unwrap();
    let x = csr(&sim.adata.x);
    assert_eq!((x.nrows, x.ncols), (300, 400));
    assert!(sim.adata.x.looks_like_counts());
    assert!(x.data.iter().all(|&v| v >= 1.0), "explicit zeros stored");
    // Re-validating the CSR structure must succeed unchanged (sorted, in range).
    let again = CsrMatrix::new(x.nrows, x.ncols, x.indptr.clone(), x.indices.clone(), x.data.clone()).unwrap();
    assert_eq!(&again, x);
    let names = &sim.adata.var.index;
    assert_eq!(names[0], "Gene0001");
    assert_eq!(names.iter().filter(|n| n.starts_with("MT-")).count(), 13);
    // Mitochondrial share near its configured fraction.
    let mt: Vec<bool> = names.iter().map(|n| n.starts_with("MT-")).collect();
    let (mut tot, mut mtc) = (0.0, 0.0);
    for (&j, &v) in x.indices.iter().zip(&x.data) {
        tot += v as f64;
        if mt[j as usize] {
            mtc += v as f64;
        }
    }
    let frac = mtc / tot;
    assert!((0.02..0.08).contains(&frac), "mitochondrial fraction {frac}");
    let uns = sim.adata.uns["simulation"].as_map().unwrap();
    match &uns["config"] {
        Value::Str(s) => assert_eq!(SimConfig::from_json(s).unwrap(), small(1)),
        other => panic!("config should be a string, got {other:?}"),
    }
    match &uns["de_log_factors"] {
        Value::F64Array { shape, .. } => assert_eq!(shape, &vec![8, 400]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn library_sizes_are_log_normal_around_lib_loc() {
    let cfg = SimConfig {
        n_cells: 1500,
        n_genes: 300,
        n_mito: 0,
        lib_loc: 7.5,
        lib_scale: 0.3,
        type_lib_sd: 0.0,
        damaged_fraction: 0.0,
        n_batches: 1,
        ..SimConfig::default()
    };
    let sim = simulate(&cfg).unwrap();
    let x = csr(&sim.adata.x);
    let logs: Vec<f64> = (0..x.nrows).map(|i| (x.row(i).1.iter().map(|&v| v as f64).sum::<f64>()).ln()).collect();
    let n = logs.len() as f64;
    let mean = logs.iter().sum::<f64>() / n;
    let sd = (logs.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    assert!((mean - 7.5).abs() < 0.05, "mean log library size {mean}");
    // Sampling noise adds a little spread on top of the configured 0.3.
    assert!((0.27..0.38).contains(&sd), "sd of log library size {sd}");
}

#[test]
fn de_genes_differ_between_types_more_than_other_genes() {
    let cfg = SimConfig { n_cells: 800, n_genes: 500, n_batches: 1, ..SimConfig::default() };
    let sim = simulate(&cfg).unwrap();
    let x = dense(csr(&sim.adata.x));
    let types = codes(sim.adata.obs.get("cell_type").unwrap());
    let is_de = match sim.adata.var.get("is_de").unwrap() {
        Column::Bool(v) => v.clone(),
        _ => panic!(),
    };
    // Normalise to the cell's total so library size does not dominate.
    let xn: Vec<Vec<f64>> = x
        .iter()
        .map(|r| {
            let s: f64 = r.iter().sum();
            r.iter().map(|v| v / s * 1e4).collect()
        })
        .collect();
    let groups: Vec<Vec<usize>> = (0..8).map(|t| (0..800).filter(|&c| types[c] == t).collect()).collect();
    let big: Vec<usize> = (0..8).filter(|&t| groups[t].len() >= 40).collect();
    assert!(big.len() >= 4);
    let means: Vec<Vec<f64>> = big.iter().map(|&t| gene_means(&xn, &groups[t])).collect();
    let all = gene_means(&xn, &(0..800).collect::<Vec<_>>());
    // Mean absolute log-fold change between types, over expressed genes.
    let (mut de, mut nde) = (Vec::new(), Vec::new());
    for g in 0..500 {
        if all[g] < 1.0 {
            continue;
        }
        let mut s = 0.0;
        let mut k = 0.0;
        for a in 0..means.len() {
            for b in a + 1..means.len() {
                s += ((means[a][g] + 0.5) / (means[b][g] + 0.5)).ln().abs();
                k += 1.0;
            }
        }
        if is_de[g] {
            de.push(s / k)
        } else {
            nde.push(s / k)
        }
    }
    let avg = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    assert!(de.len() > 20 && nde.len() > 20);
    assert!(avg(&de) > 2.0 * avg(&nde), "DE {} vs non-DE {}", avg(&de), avg(&nde));
}

#[test]
fn batches_shift_gene_means_as_their_factors_say() {
    let cfg =
        SimConfig { n_cells: 800, n_genes: 300, n_types: 1, n_lineages: 1, batch_scale: 0.2, ..SimConfig::default() };
    let sim = simulate(&cfg).unwrap();
    let x = dense(csr(&sim.adata.x));
    let batch = codes(sim.adata.obs.get("batch").unwrap());
    let b0: Vec<usize> = (0..800).filter(|&c| batch[c] == 0).collect();
    let b1: Vec<usize> = (0..800).filter(|&c| batch[c] == 1).collect();
    assert_eq!(b0.len(), 400);
    let (m0, m1) = (gene_means(&x, &b0), gene_means(&x, &b1));
    let f = &sim.truth.batch_log_factors;
    // Observed log ratio of batch means agrees in sign with the true factor difference on
    // well-expressed genes with a clear difference.
    let (mut agree, mut total) = (0, 0);
    for g in 0..300 {
        let truth = f.get(1, g) - f.get(0, g);
        if m0[g] > 2.0 && truth.abs() > 0.15 {
            total += 1;
            if ((m1[g] / m0[g]).ln() - 0.0).signum() == truth.signum() {
                agree += 1;
            }
        }
    }
    assert!(total >= 10, "{total}");
    assert!(agree as f64 / total as f64 > 0.85, "{agree}/{total}");
}

#[test]
fn spatial_cells_of_a_type_are_close_together() {
    let cfg = SimConfig { n_cells: 600, n_genes: 100, spatial: Some(SpatialConfig::default()), ..SimConfig::default() };
    let sim = simulate(&cfg).unwrap();
    let xy = sim.adata.obsm_get("spatial").unwrap().to_f64();
    assert_eq!((xy.nrows, xy.ncols), (600, 2));
    assert!(xy.data.iter().all(|&v| (0.0..=1000.0).contains(&v)));
    let types = codes(sim.adata.obs.get("cell_type").unwrap());
    let (mut same, mut ns, mut diff, mut nd) = (0.0, 0.0, 0.0, 0.0);
    for i in 0..600 {
        for j in i + 1..600 {
            let d = ((xy.get(i, 0) - xy.get(j, 0)).powi(2) + (xy.get(i, 1) - xy.get(j, 1)).powi(2)).sqrt();
            if types[i] == types[j] {
                same += d;
                ns += 1.0;
            } else {
                diff += d;
                nd += 1.0;
            }
        }
    }
    assert!(same / ns < 0.8 * (diff / nd), "same {} diff {}", same / ns, diff / nd);
}

#[test]
fn perturbation_knocks_down_its_gene_and_moves_targets() {
    let pcfg = PerturbConfig { n_perturbed: 3, fraction: 0.75, n_targets: 15, ..PerturbConfig::default() };
    let cfg = SimConfig {
        n_cells: 1200,
        n_genes: 400,
        n_types: 2,
        n_lineages: 1,
        n_batches: 1,
        perturbation: Some(pcfg),
        ..SimConfig::default()
    };
    let sim = simulate(&cfg).unwrap();
    let x = dense(csr(&sim.adata.x));
    let pert = sim.adata.obs.get("perturbation").unwrap();
    let labels = pert.to_labels();
    let truth = sim.truth.perturbation.as_ref().unwrap();
    assert_eq!(truth.genes.len(), 3);
    let control: Vec<usize> = (0..1200).filter(|&c| labels[c] == CONTROL).collect();
    assert!(control.len() > 200);
    let mc = gene_means(&x, &control);
    let (mut agree, mut total) = (0, 0);
    for (k, gene) in truth.genes.iter().enumerate() {
        let cells: Vec<usize> = (0..1200).filter(|&c| &labels[c] == gene).collect();
        assert!(cells.len() > 200, "{gene}: {}", cells.len());
        let mp = gene_means(&x, &cells);
        let gi = truth.gene_index[k];
        assert!(mp[gi] < 0.4 * mc[gi], "{gene}: perturbed {} control {}", mp[gi], mc[gi]);
        for (g, &lfc) in truth.lfc.row(k).iter().enumerate() {
            if g != gi && lfc.abs() > 0.3 && mc[g] > 0.5 {
                total += 1;
                if ((mp[g] + 0.05) / (mc[g] + 0.05)).ln().signum() == lfc.signum() {
                    agree += 1;
                }
            }
        }
    }
    assert!(total >= 10, "{total}");
    assert!(agree as f64 / total as f64 > 0.85, "{agree}/{total}");
}

#[test]
fn invalid_configs_are_rejected_with_the_parameter_named() {
    let cases: Vec<(SimConfig, &str)> = vec![
        (SimConfig { n_cells: 0, ..SimConfig::default() }, "n_cells"),
        (SimConfig { n_lineages: 9, ..SimConfig::default() }, "n_lineages"),
        (SimConfig { type_probs: vec![1.0; 3], ..SimConfig::default() }, "type_probs"),
        (SimConfig { de_prob: 1.5, ..SimConfig::default() }, "de_prob"),
        (SimConfig { mean_shape: -1.0, ..SimConfig::default() }, "mean_shape"),
        (
            SimConfig {
                perturbation: Some(PerturbConfig { genes: vec!["NOPE".into()], ..PerturbConfig::default() }),
                ..SimConfig::default()
            },
            "NOPE",
        ),
        (
            SimConfig {
                perturbation: Some(PerturbConfig { knockdown: 0.0, ..PerturbConfig::default() }),
                ..SimConfig::default()
            },
            "knockdown",
        ),
    ];
    for (cfg, word) in cases {
        let e = cfg.validate().unwrap_err().to_string();
        assert!(e.contains(word), "{e}");
        assert!(simulate(&cfg).is_err());
    }
    let e = SimConfig::from_json(r#"{"n_cels": 10}"#).unwrap_err().to_string();
    assert!(e.contains("n_cels"), "{e}");
    let ok = SimConfig::from_json(r#"{"n_cells": 10, "spatial": {}}"#).unwrap();
    assert_eq!(ok.n_cells, 10);
    assert_eq!(ok.spatial, Some(SpatialConfig::default()));
}

#[test]
fn named_perturbation_genes_are_used() {
    let pcfg = PerturbConfig { genes: vec!["Gene0005".into(), "Gene0010".into()], ..PerturbConfig::default() };
    let cfg = SimConfig { n_cells: 50, n_genes: 100, perturbation: Some(pcfg), ..SimConfig::default() };
    let sim = simulate(&cfg).unwrap();
    let p = sim.truth.perturbation.as_ref().unwrap();
    assert_eq!(p.gene_index, vec![4, 9]);
    match sim.adata.obs.get("perturbation").unwrap() {
        Column::Categorical { categories, .. } => assert_eq!(categories, &vec!["control", "Gene0005", "Gene0010"]),
        _ => panic!(),
    }
}

#[test]
fn dropout_removes_counts_of_lowly_expressed_genes() {
    let base = SimConfig { n_cells: 300, n_genes: 300, ..SimConfig::default() };
    let with = SimConfig { dropout: Some(sclm_sim::DropoutConfig { mid: 1.0, shape: -1.0 }), ..base.clone() };
    let a = simulate(&base).unwrap();
    let b = simulate(&with).unwrap();
    let (xa, xb) = (csr(&a.adata.x), csr(&b.adata.x));
    assert!(b.adata.x.looks_like_counts());
    assert!((xb.nnz() as f64) < 0.8 * xa.nnz() as f64, "{} vs {}", xb.nnz(), xa.nnz());
    // Same cells, same labels: dropout only removes entries.
    assert_eq!(a.adata.obs, b.adata.obs);
    let (da, db) = (dense(xa), dense(xb));
    for (ra, rb) in da.iter().zip(&db) {
        for (va, vb) in ra.iter().zip(rb) {
            assert!(*vb == 0.0 || vb == va);
        }
    }
}

#[test]
fn template_has_everything_but_counts() {
    let cfg = SimConfig { spatial: Some(SpatialConfig::default()), ..small(2) };
    let stream = SimStream::new(&cfg).unwrap();
    let t = stream.template();
    t.validate().unwrap();
    assert_eq!((t.n_obs(), t.n_vars()), (300, 400));
    assert_eq!(t.x.stored(), 0);
    let sim = simulate(&cfg).unwrap();
    assert_eq!(t.obs, sim.adata.obs);
    assert_eq!(t.obsm, sim.adata.obsm);
    assert_eq!(t.uns, sim.adata.uns);
}

#[test]
fn thread_count_does_not_change_the_data() {
    let cfg = small(5);
    let one = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
    let three = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
    let a = one.install(|| simulate(&cfg).unwrap());
    let b = three.install(|| simulate(&cfg).unwrap());
    assert_eq!(a.adata, b.adata);
}

#[test]
fn damaged_cells_have_small_libraries_and_high_mitochondrial_share() {
    let cfg = SimConfig { n_cells: 1000, n_genes: 300, damaged_fraction: 0.1, ..SimConfig::default() };
    let sim = simulate(&cfg).unwrap();
    let x = csr(&sim.adata.x);
    let damaged = match sim.adata.obs.get("sim_damaged").unwrap() {
        Column::Bool(v) => v.clone(),
        _ => panic!(),
    };
    let n_damaged = damaged.iter().filter(|&&d| d).count();
    assert!((60..140).contains(&n_damaged), "{n_damaged}");
    let mt_start = 300 - 13;
    let (mut pct, mut tot) = ([0.0f64; 2], [0.0f64; 2]);
    for (i, &d) in damaged.iter().enumerate() {
        let (idx, val) = x.row(i);
        let total: f64 = val.iter().map(|&v| v as f64).sum();
        let mt: f64 = idx.iter().zip(val).filter(|(j, _)| **j as usize >= mt_start).map(|(_, &v)| v as f64).sum();
        let k = usize::from(d);
        pct[k] += mt / total;
        tot[k] += total.ln();
    }
    let n = [(1000 - n_damaged) as f64, n_damaged as f64];
    let (pct_ok, pct_bad) = (pct[0] / n[0], pct[1] / n[1]);
    assert!(pct_ok < 0.07 && pct_bad > 0.2, "mito share: healthy {pct_ok}, damaged {pct_bad}");
    // Library factor 0.4: log totals differ by about ln(0.4) = -0.92.
    let diff = tot[1] / n[1] - tot[0] / n[0];
    assert!((-1.2..-0.6).contains(&diff), "log library difference {diff}");
}
