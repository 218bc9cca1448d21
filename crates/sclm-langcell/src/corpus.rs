//! Cells of AnnData files as rank-value token sequences (through the model layer's one
//! gene-matching path), and gene medians computed from a user's own corpus for a new model.
use std::collections::BTreeMap;

use sclm_data::{AnnData, CsrMatrix, RowSource};
use sclm_model::{GeneMapping, PieceOptions};
use sclm_preprocess::GeneMatch;

use crate::error::{LangCellError, Result};
use crate::tokenizer::{RankValueTokenizer, SCALE};

/// The tokens of every cell of `adata` (counts in X or `layer`) and the gene match.
pub fn tokenize_adata(
    tok: &RankValueTokenizer,
    adata: &AnnData,
    layer: Option<&str>,
    allow_non_integer: bool,
) -> Result<(Vec<Vec<u32>>, GeneMatch)> {
    let counts = sclm_model::cells::counts_matrix(adata, layer)?;
    let (mapping, matched) = GeneMapping::for_dataset(tok.genes(), &adata.var, None)?;
    let opts = PieceOptions { allow_non_integer, ..Default::default() };
    let m: &CsrMatrix = &counts;
    Ok((tokenize_rows_of(tok, m, &mapping, &opts)?, matched))
}

/// The tokens of every row of `x` (cells × dataset genes, in memory or borrowed), read through
/// the model layer's forward-call planner with `mapping` onto the vocabulary.
pub fn tokenize_rows_of(
    tok: &RankValueTokenizer,
    x: &dyn RowSource,
    mapping: &GeneMapping,
    opts: &PieceOptions,
) -> Result<Vec<Vec<u32>>> {
    let mut out = vec![Vec::new(); x.nrows()];
    sclm_model::cells::for_each_piece(tok.genes().len(), x, None, None, mapping, opts, &mut |rows, c, _| {
        for (r, t) in rows.iter().zip(tok.tokenize_rows(c)?) {
            out[*r] = t;
        }
        Ok(())
    })?;
    Ok(out)
}

/// Bins of the median sketch per decade of normalised value.
pub const BINS_PER_DECADE: f64 = 200.0;
const LOW: f64 = 1e-4;

/// Non-zero medians of `counts / total × 10,000` per gene, streamed over row chunks with memory
/// bounded by the distinct (gene, bin) pairs seen: each value goes into a log-spaced bin
/// (200 per decade, 1.2 % wide) and the median is the geometric centre of the bin holding it,
/// so medians are exact to ±0.6 %. Feed chunks with [`MedianSketch::add`].
#[derive(Debug, Clone, Default)]
pub struct MedianSketch {
    bins: Vec<BTreeMap<u32, u64>>,
}

impl MedianSketch {
    /// A sketch over `n_genes` columns.
    pub fn new(n_genes: usize) -> Self {
        MedianSketch { bins: vec![BTreeMap::new(); n_genes] }
    }

    /// Adds the cells of `x` (cells × the sketch's genes, raw counts).
    pub fn add(&mut self, x: &CsrMatrix) -> Result<()> {
        if x.ncols != self.bins.len() {
            return Err(LangCellError::Input(format!("{} genes, the sketch has {}", x.ncols, self.bins.len())));
        }
        for i in 0..x.nrows {
            let (cols, vals) = x.row(i);
            let total: f64 = vals.iter().map(|&v| v as f64).sum();
            if total <= 0.0 {
                continue;
            }
            for (&c, &v) in cols.iter().zip(vals) {
                if v > 0.0 {
                    let y = v as f64 / total * SCALE;
                    let b = ((y / LOW).log10() * BINS_PER_DECADE).floor().max(0.0) as u32;
                    *self.bins[c as usize].entry(b).or_insert(0) += 1;
                }
            }
        }
        Ok(())
    }

    /// The median of each gene (`None`: never expressed).
    pub fn medians(&self) -> Vec<Option<f64>> {
        self.bins
            .iter()
            .map(|h| {
                let n: u64 = h.values().sum();
                if n == 0 {
                    return None;
                }
                let half = n.div_ceil(2);
                let mut seen = 0;
                for (&b, &c) in h {
                    seen += c;
                    if seen >= half {
                        return Some(LOW * 10f64.powf((b as f64 + 0.5) / BINS_PER_DECADE));
                    }
                }
                None
            })
            .collect()
    }
}

/// A vocabulary for a new model from datasets sharing their var index: every gene expressed
/// somewhere, with its median (genes never expressed are left out, as Geneformer's vocabulary
/// holds only genes with a median). Returns the tokenizer and the number of genes left out.
pub fn vocabulary_from(datasets: &[&AnnData], max_tokens: usize) -> Result<(RankValueTokenizer, usize)> {
    let first = datasets.first().ok_or_else(|| LangCellError::Input("no datasets".into()))?;
    let genes = first.var.index.clone();
    let mut sketch = MedianSketch::new(genes.len());
    for a in datasets {
        if a.var.index != genes {
            return Err(LangCellError::Input(
                "the datasets do not share one gene list (var index); a new vocabulary is built over one".into(),
            ));
        }
        let m = sclm_model::cells::counts_matrix(a, None)?;
        sketch.add(&m)?;
    }
    let (mut g, mut med) = (Vec::new(), Vec::new());
    let mut dropped = 0;
    for (name, m) in genes.into_iter().zip(sketch.medians()) {
        match m {
            Some(m) => {
                g.push(name);
                med.push(m);
            }
            None => dropped += 1,
        }
    }
    Ok((RankValueTokenizer::new(g, med, max_tokens)?, dropped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sketch_median_is_within_its_bin_width() {
        // Gene 0 in 5 cells with values 1, 2, 3, 4, 5 of 10 counts → 1000 … 5000; median 3000.
        let rows: Vec<(Vec<u32>, Vec<f32>)> = (1..=5).map(|v| (vec![0, 1], vec![v as f32, 10.0 - v as f32])).collect();
        let mut indptr = vec![0];
        let (mut idx, mut val) = (Vec::new(), Vec::new());
        for (c, v) in rows {
            idx.extend(c);
            val.extend(v);
            indptr.push(idx.len());
        }
        let x = CsrMatrix::new(5, 3, indptr, idx, val).unwrap();
        let mut s = MedianSketch::new(3);
        s.add(&x).unwrap();
        let m = s.medians();
        let rel = (m[0].unwrap() - 3000.0).abs() / 3000.0;
        assert!(rel < 0.006, "median {:?}", m[0]);
        assert!(m[2].is_none());
    }
}
