//! `sclm demo`: the main job on the embedded default dataset.
//!
//! Simulates a small tissue (cell types, batches, spatial niches), describes it, preprocesses it
//! (QC, normalisation, log1p, highly variable genes, PCA), scores the PCA embedding against the
//! simulation's true cell types and batches, runs the denoising baseline, draws a UMAP and writes
//! every stage to the output directory.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use sclm_preprocess::pipeline;

use crate::Global;

/// Arguments of `sclm demo`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory for the demo's files.
    #[arg(long, default_value = "sclm-demo")]
    pub out_dir: PathBuf,
    /// Number of simulated cells.
    #[arg(long, default_value_t = 5000)]
    pub cells: usize,
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    let t0 = Instant::now();
    std::fs::create_dir_all(&a.out_dir)?;
    let raw_path = a.out_dir.join("simulated.h5ad");
    let mut cfg = sclm_sim::SimConfig { n_cells: a.cells, seed: g.seed, ..Default::default() };
    cfg.spatial = Some(sclm_sim::SpatialConfig::default());
    println!("1. simulate: {} cells x {} genes, {} types, {} batches, spatial niches", cfg.n_cells, cfg.n_genes, cfg.n_types, cfg.n_batches);
    super::simulate::simulate_to(&cfg, &raw_path, 10_000, None, g.quiet)?;

    println!("2. info:");
    let (mut adata, report) = sclm_io::read_any(&raw_path)?;
    for line in super::info::describe(&raw_path.display().to_string(), super::info::report_layout(&report), &adata).lines() {
        println!("   {line}");
    }

    let steps = pipeline::parse_steps(
        "qc,filter_cells:min_genes=200,filter_genes:min_cells=3,normalize_total:target_sum=1e4,log1p,hvg:flavor=seurat:n_top_genes=1000,pca:n_comps=30",
    )?;
    println!("3. preprocess:");
    for r in pipeline::run(&mut adata, &steps, g.seed)? {
        println!("   {}: {}", r.step, r.summary);
    }
    let out = a.out_dir.join("preprocessed.h5ad");
    sclm_io::write_h5ad(&adata, &out, &sclm_io::WriteOptions::default())?;
    println!("   wrote {} ({} cells x {} genes, obsm: {})", out.display(), adata.n_obs(), adata.n_vars(), adata.obsm.keys().cloned().collect::<Vec<_>>().join(", "));

    println!("4. evaluate the PCA embedding against the true cell types and batches:");
    let emb = adata.obsm_get("X_pca")?.to_f32();
    let types = adata.obs_column("cell_type")?.to_labels();
    let batches = adata.obs_column("batch")?.to_labels();
    let opts = sclm_eval::EvaluateOptions { seed: g.seed, method: "PCA-30".into(), ..Default::default() };
    let rep = sclm_eval::evaluate_embedding(&emb, &types, Some(&batches), &opts)?;
    for line in rep.to_table().lines() {
        println!("   {line}");
    }
    let plot = a.out_dir.join("umap_cell_type.png");
    let coords = super::plot::layout(&emb, g.seed, g.quiet)?;
    crate::output::plot_atomic(&plot, |tmp| {
        sclm_eval::scatter_png(&coords, &sclm_eval::ColorBy::Categorical(types.clone()), "UMAP of PCA — true cell type", tmp)
    })?;
    println!("   wrote {}", plot.display());

    println!("5. denoising baseline (10% of non-zero counts masked, kNN diffusion):");
    let (raw, _) = sclm_io::read_any(&raw_path)?;
    let rep = super::baseline::denoise(&raw.x, 30, 1000, g.seed)?;
    for line in rep.to_table().lines() {
        println!("   {line}");
    }
    println!("done in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
