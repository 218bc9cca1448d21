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
    /// The class text embeddings, `classes × proj_dim`.
    pub text_embeddings: Vec<f32>,
}

impl ZeroShotAnnotation {
    /// Cosine similarity of every cell to every class text (`cells × classes`, row-major).
    pub fn cosine(&self) -> Vec<f32> {
        let k = self.scores.n_classes;
        let d = self.text_embeddings.len() / k.max(1);
        let n = self.scores.cell_embeddings.len() / d.max(1);
        let mut out = vec![0f32; n * k];
        for i in 0..n {
            let c = &self.scores.cell_embeddings[i * d..(i + 1) * d];
            for j in 0..k {
                let t = &self.text_embeddings[j * d..(j + 1) * d];
                out[i * k + j] = c.iter().zip(t).map(|(a, b)| a * b).sum();
            }
        }
        out
    }
}

/// Retrieval scores of labelled cells against their class texts (LangCell §4: cell→text and
/// text→cell retrieval): `cell_to_text[k]` = fraction of cells whose own class text is among
/// the `k` texts most similar to them (recall@k); `text_to_cell[k]` = mean over classes of the
/// fraction of the `k` cells most similar to a class text that belong to the class
/// (precision@k; many cells share one text, so a recall over cells would reward nothing).
#[derive(Debug, Clone, PartialEq)]
pub struct Retrieval {
    /// `(k, recall@k)`.
    pub cell_to_text: Vec<(usize, f64)>,
    /// `(k, precision@k)`.
    pub text_to_cell: Vec<(usize, f64)>,
}

/// [`Retrieval`] at `ks` from a `cells × classes` similarity matrix and each cell's class.
pub fn retrieval(cosine: &[f32], n_classes: usize, truth: &[usize], ks: &[usize]) -> Retrieval {
    let n = truth.len();
    let k = n_classes;
    let mut c2t = Vec::new();
    let mut t2c = Vec::new();
    for &kk in ks {
        let mut hit = 0usize;
        for (i, &y) in truth.iter().enumerate() {
            let row = &cosine[i * k..(i + 1) * k];
            let better = row.iter().filter(|&&v| v > row[y]).count();
            if better < kk {
                hit += 1;
            }
        }
        c2t.push((kk, hit as f64 / n.max(1) as f64));
        let mut prec = Vec::new();
        for j in 0..k {
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| cosine[b * k + j].total_cmp(&cosine[a * k + j]).then(a.cmp(&b)));
            let top = kk.min(n);
            if top > 0 {
                prec.push(order[..top].iter().filter(|&&i| truth[i] == j).count() as f64 / top as f64);
            }
        }
        t2c.push((kk, prec.iter().sum::<f64>() / prec.len().max(1) as f64));
    }
    Retrieval { cell_to_text: c2t, text_to_cell: t2c }
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
    Ok(ZeroShotAnnotation {
        scores,
        matched: p.matched,
        truncated_texts: truncated(&classes),
        text_embeddings: classes.embeddings.clone(),
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retrieval_counts_ranks_and_top_cells() {
        // 4 cells × 2 classes; cells 0, 1 are class 0, cells 2, 3 class 1.
        let cos = vec![0.9, 0.1, 0.2, 0.8, 0.1, 0.7, 0.3, 0.6];
        let r = retrieval(&cos, 2, &[0, 0, 1, 1], &[1, 2]);
        // Cell 1 ranks its text second: recall@1 = 3/4, recall@2 = 1.
        assert_eq!(r.cell_to_text, vec![(1, 0.75), (2, 1.0)]);
        // Class 0's top cells: 0 (0.9), 3 (0.3) → @1 1, @2 0.5; class 1's: 1 (0.8), 2 (0.7) → @1 0, @2 0.5.
        assert_eq!(r.text_to_cell, vec![(1, 0.5), (2, 0.5)]);
    }
}
