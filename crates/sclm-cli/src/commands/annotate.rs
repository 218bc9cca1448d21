//! `sclm annotate`: zero-shot cell-type annotation from class names and their texts (LangCell).

use std::collections::BTreeSet;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use sclm_data::{Array2, Column, Dense};
use sclm_langcell::annotate::zero_shot;
use sclm_langcell::zeroshot::{ZeroShotOptions, DEFAULT_ALPHA};
use sclm_langcell::LangCellModel;

use super::langcell_args::{CountsArgs, TextArgs};
use crate::Global;

/// Arguments of `sclm annotate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Input: .h5ad with raw counts (X or --layer), Cell Ranger .h5 or matrix directory.
    pub input: PathBuf,
    /// A LangCell model directory (`sclm import langcell`, `sclm pretrain langcell`).
    #[arg(long)]
    pub model: PathBuf,
    /// Output .h5ad: the input with obs `<key-added>` (class), `<key-added>_score` and obsm
    /// `<key-added>_scores` (cells × classes, columns in the order of the classes printed).
    #[arg(short, long)]
    pub output: PathBuf,
    /// Candidate classes, comma-separated (e.g. "B cell,T cell,natural killer cell").
    #[arg(long, conflicts_with = "classes_from", value_delimiter = ',')]
    pub classes: Vec<String>,
    /// Take the candidate classes from the distinct values of this obs column.
    #[arg(long)]
    pub classes_from: Option<String>,
    /// Weight of cell-text similarity against cell-text matching (paper default 0.2; the
    /// published notebook uses 0.1).
    #[arg(long, default_value_t = DEFAULT_ALPHA)]
    pub alpha: f64,
    /// Run cell-text matching only for the k classes most similar to each cell (faster).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// obs column with the true labels: report accuracy and macro-F1 (similarity only, matching
    /// only, combined) for the cells whose label is a candidate class.
    #[arg(long)]
    pub truth: Option<String>,
    /// Few-shot: first tune the model on this many cells per class drawn (with --seed) from
    /// --truth (published recipe: Adam 1e-5, 10 epochs, batch 12); the tuned model annotates
    /// and the table scores zero-shot and few-shot on the same cells, the shots left out.
    #[arg(long, requires = "truth")]
    pub few_shot: Option<usize>,
    #[command(flatten)]
    pub text: TextArgs,
    #[command(flatten)]
    pub counts: CountsArgs,
    /// obs key of the predictions (default `langcell_zero_shot`).
    #[arg(long, default_value = "langcell_zero_shot")]
    pub key_added: String,
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    let file = a.input.display().to_string();
    let device = g.device()?;
    let model = LangCellModel::load(&a.model, &device).with_context(|| a.model.display().to_string())?;
    let (adata, report) = sclm_io::read_any(&a.input)?;
    crate::progress::warn_read(g.quiet, &a.input, &report);
    let input = a.counts.prepare(&adata, &file)?;
    let classes: Vec<String> = match (&a.classes_from, a.classes.is_empty()) {
        (Some(k), _) => {
            let col = input.obs.column(k, "obs column").with_context(|| file.clone())?;
            col.to_labels().into_iter().collect::<BTreeSet<_>>().into_iter().collect()
        }
        (None, false) => a.classes.iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
        (None, true) => bail!("give the candidate classes with --classes or --classes-from"),
    };
    let lt = a.text.resolve(&classes, g.quiet)?;
    let names: Vec<String> = lt.matched.iter().map(|m| m.0.clone()).collect();
    let texts: Vec<String> = lt.matched.iter().map(|m| m.1.clone()).collect();
    let opts = ZeroShotOptions { alpha: a.alpha, top_k: a.top_k };
    let eopts = a.counts.embed_options();
    // Few-shot: the shots and the tuned model (the zero-shot scores of the untuned one are kept
    // for the comparison).
    let mut shots: Vec<usize> = Vec::new();
    let mut before = None;
    let model = match a.few_shot {
        Some(kshot) => {
            let t = a.truth.as_deref().unwrap_or_default();
            let truth = input.obs.column(t, "obs column").with_context(|| file.clone())?.to_labels();
            let lab: Vec<Option<usize>> = truth.iter().map(|l| names.iter().position(|n| n == l)).collect();
            shots = sclm_langcell::fewshot::draw_shots(&lab, names.len(), kshot, g.seed);
            if shots.is_empty() {
                bail!("--few-shot: no cell's '{t}' label is among the candidate classes");
            }
            // Only the shot cells are tokenized.
            let (cells, _) = sclm_langcell::corpus::tokenize_adata(
                model.gene_tokenizer(),
                &input.select_obs(&shots),
                a.counts.layer.as_deref(),
                eopts.pieces.allow_non_integer,
            )
            .with_context(|| file.clone())?;
            let labels: Vec<usize> = shots.iter().filter_map(|&i| lab[i]).collect();
            let bar0 = crate::progress::bar(input.n_obs() as u64, "zero-shot", "cells", g.quiet);
            before = Some(
                zero_shot(&model, &input, &texts, &opts, &eopts, &mut |n| bar0.set_position(n as u64))
                    .with_context(|| file.clone())?,
            );
            bar0.finish_and_clear();
            let cfg = sclm_langcell::fewshot::FewShotConfig { seed: g.seed, ..Default::default() };
            crate::progress::note(
                g.quiet,
                format!("few-shot: tuning on {} cells ({kshot} per class at most)", cells.len()),
            );
            let (tuned, _) = model.few_shot(
                &cells,
                &labels,
                &texts,
                &cfg,
                &g.device()?.autodiff(),
                &mut sclm_nn::train::NoProgress,
            )?;
            tuned
        }
        None => model,
    };
    let bar = crate::progress::bar(input.n_obs() as u64, "zero-shot", "cells", g.quiet);
    let res = zero_shot(&model, &input, &texts, &opts, &eopts, &mut |n| bar.set_position(n as u64))
        .with_context(|| file.clone())?;
    bar.finish_and_clear();
    crate::progress::note(g.quiet, format!("{file}: {}", res.matched.report()));
    for (c, n) in &res.truncated_texts {
        crate::progress::note(
            g.quiet,
            format!("text of '{}' cut by {n} tokens to the text encoder's positions", names[*c]),
        );
    }
    let k = names.len();
    let combined = res.scores.combined(a.alpha);
    let pred_idx = res.scores.predictions(a.alpha);
    let pred: Vec<String> = pred_idx.iter().map(|&i| names[i].clone()).collect();
    let score: Vec<f32> = pred_idx.iter().enumerate().map(|(r, &i)| combined[r * k + i]).collect();
    if let Some(t) = &a.truth {
        let truth = input.obs.column(t, "obs column").with_context(|| file.clone())?.to_labels();
        let keep: Vec<usize> =
            (0..truth.len()).filter(|&i| names.contains(&truth[i]) && shots.binary_search(&i).is_err()).collect();
        if keep.is_empty() {
            bail!("no cell's '{t}' label is among the candidate classes");
        }
        let y: Vec<String> = keep.iter().map(|&i| truth[i].clone()).collect();
        if !shots.is_empty() {
            println!(
                "({} shot cells left out of the scores; every row after the first uses the tuned model)",
                shots.len()
            );
        }
        println!(
            "zero-shot annotation of {} cells ({} classes; {} cells with other labels left out)",
            keep.len(),
            k,
            truth.len() - keep.len() - shots.len()
        );
        println!("{:<22} {:>9} {:>9}", "scores", "accuracy", "macro-F1");
        let argmax = |v: &[f32], r: usize| sclm_model::argmax(&v[r * k..(r + 1) * k]).0;
        let c01 = res.scores.combined(0.1);
        let mut rows: Vec<(String, Vec<usize>)> = Vec::new();
        if let Some(b) = &before {
            let pb = b.scores.predictions(a.alpha);
            rows.push((format!("zero-shot alpha {}", a.alpha), keep.iter().map(|&r| pb[r]).collect()));
        }
        let tag = if before.is_some() { format!("{}-shot ", shots.len() / names.len().max(1)) } else { String::new() };
        rows.extend(vec![
            ("similarity (alpha 1)".into(), keep.iter().map(|&r| argmax(&res.scores.sim, r)).collect()),
            ("matching (alpha 0)".into(), keep.iter().map(|&r| argmax(&res.scores.ctm, r)).collect()),
            ("alpha 0.1 (notebook)".into(), keep.iter().map(|&r| argmax(&c01, r)).collect()),
            (format!("{tag}alpha {}", a.alpha), keep.iter().map(|&r| pred_idx[r]).collect()),
        ]);
        for (label, pi) in &rows {
            let p: Vec<String> = pi.iter().map(|&i| names[i].clone()).collect();
            println!(
                "{label:<22} {:>9.4} {:>9.4}",
                sclm_eval::metrics::accuracy(&y, &p)?,
                sclm_eval::metrics::f1_macro(&y, &p)?
            );
        }
        let cos = res.cosine();
        let sub: Vec<f32> = keep.iter().flat_map(|&r| cos[r * k..(r + 1) * k].to_vec()).collect();
        let yi: Vec<usize> = keep.iter().map(|&r| names.iter().position(|n| *n == truth[r]).unwrap_or(0)).collect();
        let ret = sclm_langcell::annotate::retrieval(&sub, k, &yi, &[1, 5, 10]);
        let fmt = |v: &[(usize, f64)]| v.iter().map(|(k, x)| format!("@{k} {x:.4}")).collect::<Vec<_>>().join("  ");
        println!("cell→text recall {}", fmt(&ret.cell_to_text));
        println!("text→cell precision {}", fmt(&ret.text_to_cell));
    }
    let mut out = adata;
    out.obs.insert(a.key_added.clone(), Column::Str(pred))?;
    out.obs.insert(format!("{}_score", a.key_added), Column::F32(score))?;
    out.obsm.insert(
        format!("{}_scores", a.key_added),
        Array2::F32(Dense { nrows: input.n_obs(), ncols: k, data: combined }),
    );
    sclm_io::write_h5ad(&out, &a.output, &Default::default())?;
    crate::progress::note(
        g.quiet,
        format!(
            "wrote {} (obs['{}'], obsm['{}_scores'] over: {})",
            a.output.display(),
            a.key_added,
            a.key_added,
            names.join(", ")
        ),
    );
    Ok(())
}
