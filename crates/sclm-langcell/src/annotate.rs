//! Zero-shot annotation of an AnnData: cells read through the model layer's one gene-matching
//! path and forward-call planner, scored against class texts ([`crate::zeroshot`]).
use sclm_data::{AnnData, RowSource};
use sclm_model::{EmbedOptions, GeneMapping, PieceOptions};
use sclm_preprocess::GeneMatch;

use crate::error::Result;
use crate::family::LangCellModel;
use crate::zeroshot::{ClassTexts, ZeroShotOptions, ZeroShotScores};

/// Zero-shot results for every cell of a dataset, in cell order.
#[derive(Debug, Clone)]
pub struct ZeroShotAnnotation {
    /// Scores (cells × classes) and cell embeddings.
    pub scores: ZeroShotScores,
    /// The gene match (print `report()`).
    pub matched: GeneMatch,
    /// Class texts cut to the text encoder's positions: `(class index, tokens dropped)`.
    pub truncated_texts: Vec<(usize, usize)>,
}

/// Scores every cell of `adata` against `texts` (one per class).
pub fn zero_shot(
    model: &LangCellModel,
    adata: &AnnData,
    texts: &[String],
    opts: &ZeroShotOptions,
    eopts: &EmbedOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<ZeroShotAnnotation> {
    let classes = model.class_texts(texts)?;
    let p = sclm_model::prepare(model, adata, eopts)?;
    let counts: &sclm_data::CsrMatrix = &p.counts;
    let scores = zero_shot_rows(model, counts, &p.mapping, &classes, opts, &eopts.pieces, &mut |n| {
        progress(n);
        Ok(())
    })?;
    Ok(ZeroShotAnnotation { scores, matched: p.matched, truncated_texts: truncated(&classes) })
}

/// The class texts cut to the text encoder's positions: `(class index, tokens dropped)`.
pub fn truncated(classes: &ClassTexts) -> Vec<(usize, usize)> {
    classes.encoded.iter().enumerate().filter(|(_, e)| e.truncated > 0).map(|(i, e)| (i, e.truncated)).collect()
}

/// Scores the rows of `x` (cells × dataset genes: in memory or any [`RowSource`], such as a
/// borrowed NumPy or SciPy matrix) against `classes`. `progress` receives the rows done after
/// each forward call; an error it returns stops the work.
pub fn zero_shot_rows(
    model: &LangCellModel,
    x: &dyn RowSource,
    mapping: &GeneMapping,
    classes: &ClassTexts,
    opts: &ZeroShotOptions,
    pieces: &PieceOptions,
    progress: &mut dyn FnMut(usize) -> sclm_model::Result<()>,
) -> Result<ZeroShotScores> {
    let n = x.nrows();
    let k = classes.encoded.len();
    let d = model.model().config().proj_dim;
    let mut out = ZeroShotScores {
        n_classes: k,
        sim: vec![0.0; n * k],
        match_prob: vec![0.0; n * k],
        ctm: vec![0.0; n * k],
        cell_embeddings: vec![0.0; n * d],
    };
    let mut done = 0;
    sclm_model::cells::for_each_piece(
        model.gene_tokenizer().genes().len(),
        x,
        None,
        None,
        mapping,
        pieces,
        &mut |rows, x, _| {
            let tokens = model.gene_tokenizer().tokenize_rows(x)?;
            let s = model.zero_shot_tokens(&tokens, classes, opts)?;
            for (i, &r) in rows.iter().enumerate() {
                out.sim[r * k..(r + 1) * k].copy_from_slice(&s.sim[i * k..(i + 1) * k]);
                out.match_prob[r * k..(r + 1) * k].copy_from_slice(&s.match_prob[i * k..(i + 1) * k]);
                out.ctm[r * k..(r + 1) * k].copy_from_slice(&s.ctm[i * k..(i + 1) * k]);
                out.cell_embeddings[r * d..(r + 1) * d].copy_from_slice(&s.cell_embeddings[i * d..(i + 1) * d]);
            }
            done += rows.len();
            progress(done)
        },
    )?;
    Ok(out)
}
