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
    #[arg(short, long, default_value = "sclm-demo")]
    pub output: PathBuf,
    /// Number of simulated cells.
    #[arg(long, default_value_t = 5000)]
    pub cells: usize,
    /// Pretraining epochs of the small CellPLM (0 skips the model).
    #[arg(long, default_value_t = 25)]
    pub pretrain_epochs: usize,
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    let t0 = Instant::now();
    std::fs::create_dir_all(&a.output)?;
    let raw_path = a.output.join("simulated.h5ad");
    let mut cfg = sclm_sim::SimConfig { n_cells: a.cells, seed: g.seed, ..Default::default() };
    cfg.spatial = Some(sclm_sim::SpatialConfig::default());
    println!(
        "1. simulate: {} cells x {} genes, {} types, {} batches, spatial niches",
        cfg.n_cells, cfg.n_genes, cfg.n_types, cfg.n_batches
    );
    super::simulate::simulate_to(&cfg, &raw_path, 10_000, None, g.quiet)?;

    println!("2. info:");
    let (mut adata, report) = sclm_io::read_any(&raw_path)?;
    for line in
        super::info::describe(&raw_path.display().to_string(), super::info::report_layout(&report), &adata).lines()
    {
        println!("   {line}");
    }

    let steps = pipeline::parse_steps(
        "qc,filter_cells:min_genes=200,filter_genes:min_cells=3,normalize_total:target_sum=1e4,log1p,hvg:flavor=seurat:n_top_genes=1000,pca:n_comps=30",
    )?;
    println!("3. preprocess:");
    for r in pipeline::run(&mut adata, &steps, g.seed)? {
        println!("   {}: {}", r.step, r.summary);
    }
    let out = a.output.join("preprocessed.h5ad");
    sclm_io::write_h5ad(&adata, &out, &sclm_io::WriteOptions::default())?;
    println!(
        "   wrote {} ({} cells x {} genes, obsm: {})",
        out.display(),
        adata.n_obs(),
        adata.n_vars(),
        adata.obsm.keys().cloned().collect::<Vec<_>>().join(", ")
    );

    println!("4. evaluate the PCA embedding against the true cell types and batches:");
    let emb = adata.obsm_get("X_pca")?.to_f32();
    let types = adata.obs_column("cell_type")?.to_labels();
    let batches = adata.obs_column("batch")?.to_labels();
    let opts = sclm_eval::EvaluateOptions { seed: g.seed, method: "PCA-30".into(), ..Default::default() };
    let rep_pca = sclm_eval::evaluate_embedding(&emb, &types, Some(&batches), &opts)?;
    for line in rep_pca.to_table().lines() {
        println!("   {line}");
    }
    let plot = a.output.join("umap_cell_type.png");
    let coords = super::plot::layout(&emb, g.seed, g.quiet)?;
    crate::output::plot_atomic(&plot, |tmp| {
        sclm_eval::scatter_png(
            &coords,
            &sclm_eval::ColorBy::Categorical(types.clone()),
            "UMAP of PCA — true cell type",
            tmp,
        )
    })?;
    println!("   wrote {}", plot.display());

    println!("5. denoising baseline (10% of non-zero counts masked, kNN diffusion):");
    let (raw, _) = sclm_io::read_any(&raw_path)?;
    let rep = super::baseline::denoise(&raw.x, 30, 1000, g.seed)?;
    for line in rep.to_table().lines() {
        println!("   {line}");
    }
    if a.pretrain_epochs > 0 {
        cellplm_stage(g, &a, &raw_path)?;
    }
    println!("done in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}

/// Steps 6–9: pretrain a small CellPLM on the raw counts, embed zero-shot and score it next to
/// PCA on the same cells (the task layer's embedding protocol), then fine-tune it for
/// annotation and score its denoising, each next to its baseline.
fn cellplm_stage(g: &Global, a: &Args, raw_path: &std::path::Path) -> Result<()> {
    let t = Instant::now();
    let model_dir = a.output.join("cellplm_small");
    println!("6. pretrain a small CellPLM (masked-cell modelling, {} epochs) on the raw counts:", a.pretrain_epochs);
    let args = super::pretrain::Args {
        input: vec![raw_path.to_path_buf()],
        config: "small".into(),
        output: model_dir.clone(),
        run_dir: None,
        resume: false,
        epochs: a.pretrain_epochs,
        lr: 3e-4,
        weight_decay: 1e-8,
        group_key: "batch".into(),
        max_cells_per_group: 128,
        spatial_key: "spatial".into(),
        layer: None,
        mask_node_rate: 0.75,
        mask_feature_rate: 0.25,
        drop_node_rate: 0.3,
    };
    super::pretrain::run(g, args)?;
    println!("   pretrained in {:.1} s, model in {}", t.elapsed().as_secs_f64(), model_dir.display());

    println!("7. embed zero-shot and evaluate next to PCA-30 on the same cells:");
    let model = crate::load_model(&model_dir, &g.device()?)?;
    let (mut raw, _) = sclm_io::read_any(raw_path)?;
    let opts = sclm_tasks::EmbeddingOptions {
        label_key: "cell_type".into(),
        batch_key: Some("batch".into()),
        embed: sclm_model::EmbedOptions { spatial_key: Some("spatial".into()), ..Default::default() },
        baseline: sclm_tasks::PcaFit { n_comps: 30, n_top_genes: 1000, seed: g.seed, ..Default::default() },
        evaluate: sclm_eval::EvaluateOptions { seed: g.seed, ..Default::default() },
    };
    let out = sclm_tasks::embedding_quality(model.as_ref(), &raw, &opts, &mut |_| {})?;
    let (rep, rep_pca) = (&out.reports[0], &out.reports[1]);
    println!("   {:<20} {:>10} {:>14}", "metric", "PCA-30", "CellPLM-small");
    let fmt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.4}"));
    for m in &rep.metrics {
        println!("   {:<20} {:>10} {:>14}", m.name, fmt(rep_pca.get(&m.name)), fmt(m.value));
    }
    let types = raw.obs_column("cell_type")?.to_labels();
    let plot = a.output.join("umap_cellplm.png");
    let coords = super::plot::layout(&out.embedding, g.seed, g.quiet)?;
    crate::output::plot_atomic(&plot, |tmp| {
        sclm_eval::scatter_png(
            &coords,
            &sclm_eval::ColorBy::Categorical(types.clone()),
            "UMAP of CellPLM — true cell type",
            tmp,
        )
    })?;
    raw.obsm.insert("X_cellplm".into(), sclm_data::Array2::F32(out.embedding));
    let out_path = a.output.join("cellplm_embedded.h5ad");
    sclm_io::write_h5ad(&raw, &out_path, &sclm_io::WriteOptions::default())?;
    println!("   wrote {} and {}", out_path.display(), plot.display());

    let common = super::finetune::Common {
        input: raw_path.to_path_buf(),
        model: Some(model_dir.clone()),
        layer: None,
        use_raw: false,
        log1p_input: false,
        allow_non_integer: false,
        json: None,
    };
    let epochs = 60;
    let t = Instant::now();
    println!("8. cell-type annotation: fine-tune the pretrained model (published recipe, {epochs} epochs at most):");
    let ann = super::finetune::AnnotationArgs {
        common: common.clone(),
        group_key: Some("batch".into()),
        label_key: "cell_type".into(),
        output: a.output.join("annotated.h5ad"),
        key_added: None,
        save_model: None,
        run_dir: None,
        resume: false,
        epochs,
        lr: 5e-3,
        valid_frac: 0.2,
        test_frac: 0.2,
        min_cells_per_class: 3,
        n_top_genes: 1000,
    };
    super::finetune::run(g, super::finetune::Args { task: super::finetune::Task::Annotation(ann) })?;
    println!("   in {:.1} s", t.elapsed().as_secs_f64());
    let t = Instant::now();
    // The pretrained model saw every count, the hidden ones too: denoising trains a fresh model
    // on the data with the hidden entries removed instead.
    println!("9. denoising: hide 10% of the non-zero counts, train a fresh model on the rest (8 epochs), score the hidden ones:");
    let den = super::finetune::DenoisingArgs {
        common: super::finetune::Common { model: None, ..common },
        group_key: Some("batch".into()),
        output: None,
        n_top_genes: 1000,
        hide_frac: 0.1,
        pretrain_epochs: 8,
        epochs: 0,
        lr: None,
    };
    super::finetune::run(g, super::finetune::Args { task: super::finetune::Task::Denoising(den) })?;
    println!("   in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}
