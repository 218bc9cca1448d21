//! The one gene-matching path every model uses: a model's vocabulary against a dataset's var
//! (symbols or Ensembl ids on either side, mapped offline through GENCODE v44 by
//! [`sclm_preprocess::match_genes`]), with a report of what was matched and dropped, and the
//! [`GeneMapping`] that re-indexes a dataset's columns onto the vocabulary.
use sclm_data::{CsrMatrix, DataFrame};
use sclm_preprocess::{match_genes, GeneMatch, GeneMatchOptions};

use crate::error::{ModelError, Result};

/// Which dataset column feeds each gene of a model vocabulary.
#[derive(Debug, Clone, PartialEq)]
pub struct GeneMapping {
    vocab_to_col: Vec<Option<usize>>,
    n_cols: usize,
    /// Dataset column → vocabulary entries fed by it (usually zero or one).
    col_to_vocab: Vec<Vec<u32>>,
}

impl GeneMapping {
    /// From a precomputed mapping: entry `v` is the dataset column of vocabulary gene `v`
    /// (`None` = absent from the dataset; its input is zero). Fails when a column is out of range
    /// or no gene is matched.
    pub fn new(vocab_to_col: Vec<Option<usize>>, n_dataset_cols: usize) -> Result<Self> {
        let mut col_to_vocab = vec![Vec::new(); n_dataset_cols];
        for (v, c) in vocab_to_col.iter().enumerate() {
            if let Some(c) = *c {
                if c >= n_dataset_cols {
                    return Err(ModelError::Input(format!(
                        "gene mapping points vocabulary gene {v} at column {c}, but the dataset has {n_dataset_cols} genes"
                    )));
                }
                col_to_vocab[c].push(v as u32);
            }
        }
        if col_to_vocab.iter().all(|v| v.is_empty()) {
            return Err(ModelError::Input("no dataset gene matches the model vocabulary".into()));
        }
        Ok(GeneMapping { vocab_to_col, n_cols: n_dataset_cols, col_to_vocab })
    }

    /// Matches `vocab` against the genes of `var` through [`sclm_preprocess::match_genes`]
    /// (exact ids with Ensembl versions ignored, symbols up to case, symbol ↔ Ensembl id through
    /// GENCODE v44). The identifiers are the values of `id_column` when given, otherwise
    /// whichever of the var index and a `gene_ids` column (when present, as Cell Ranger and
    /// scanpy write it) matches more genes. Returns the mapping and the match (print
    /// `report()` to tell the user what was dropped).
    pub fn for_dataset(vocab: &[String], var: &DataFrame, id_column: Option<&str>) -> Result<(Self, GeneMatch)> {
        let opts = GeneMatchOptions::default();
        let candidates: Vec<Vec<String>> = match id_column {
            Some(col) => vec![var.column(col, "var column")?.to_labels()],
            None => {
                let mut c = vec![var.index.clone()];
                if let Some(ids) = var.get("gene_ids") {
                    c.push(ids.to_labels());
                }
                c
            }
        };
        let mut best: Option<GeneMatch> = None;
        let mut first_err = None;
        for names in &candidates {
            match match_genes(names, vocab, &opts) {
                Ok(m) => {
                    if best.as_ref().is_none_or(|b| m.n_matched > b.n_matched) {
                        best = Some(m);
                    }
                }
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        let m = match (best, first_err) {
            (Some(m), _) => m,
            (None, Some(e)) => return Err(e.into()),
            (None, None) => return Err(ModelError::Input("the dataset has no genes".into())),
        };
        let mapping = Self::new(m.columns(), var.nrows())?;
        Ok((mapping, m))
    }

    /// Dataset column of each vocabulary gene.
    pub fn vocab_to_col(&self) -> &[Option<usize>] {
        &self.vocab_to_col
    }

    /// Vocabulary entries fed by each dataset column.
    pub fn col_to_vocab(&self) -> &[Vec<u32>] {
        &self.col_to_vocab
    }

    /// Number of vocabulary genes found in the dataset.
    pub fn n_matched(&self) -> usize {
        self.vocab_to_col.iter().filter(|c| c.is_some()).count()
    }

    /// Number of vocabulary genes.
    pub fn n_vocab(&self) -> usize {
        self.vocab_to_col.len()
    }

    /// Number of dataset columns the mapping expects.
    pub fn n_dataset_cols(&self) -> usize {
        self.n_cols
    }

    /// The vocabulary genes the dataset measures (sorted vocabulary indices): the dataset's
    /// gene panel.
    pub fn panel(&self) -> Vec<u32> {
        let mut p: Vec<u32> = self.col_to_vocab.iter().flatten().copied().collect();
        p.sort_unstable();
        p.dedup();
        p
    }

    /// The rows `rows` of `x` re-indexed onto the vocabulary (CSR parts, `rows.len() × vocab`,
    /// indices increasing within a row).
    pub fn remap(&self, x: &CsrMatrix, rows: &[usize]) -> (Vec<usize>, Vec<u32>, Vec<f32>) {
        let (mut p, mut idx, mut val) = (Vec::with_capacity(rows.len() + 1), Vec::new(), Vec::new());
        p.push(0);
        let mut buf: Vec<(u32, f32)> = Vec::new();
        for &r in rows {
            self.remap_row(x, r, &mut buf);
            for &(g, v) in &buf {
                idx.push(g);
                val.push(v);
            }
            p.push(idx.len());
        }
        (p, idx, val)
    }

    /// Row `r` of `x` over the vocabulary, in increasing vocabulary order, into `buf`.
    pub fn remap_row(&self, x: &CsrMatrix, r: usize, buf: &mut Vec<(u32, f32)>) {
        buf.clear();
        let (cols, vals) = x.row(r);
        let mut sorted = true;
        for (&c, &v) in cols.iter().zip(vals) {
            for &g in &self.col_to_vocab[c as usize] {
                if buf.last().is_some_and(|l| l.0 > g) {
                    sorted = false;
                }
                buf.push((g, v));
            }
        }
        if !sorted {
            buf.sort_unstable_by_key(|e| e.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sclm_data::{Column, DataFrame};

    fn var(names: &[&str]) -> DataFrame {
        DataFrame::new(names.iter().map(|s| s.to_string()).collect())
    }

    #[test]
    fn symbols_and_ensembl_ids_meet_through_gencode() {
        // Vocabulary of Ensembl ids (TP53, GAPDH), dataset of symbols in another order.
        let vocab = vec!["ENSG00000111640".to_string(), "ENSG00000141510".to_string(), "ENSG_NOT_A_GENE".to_string()];
        let (m, report) = GeneMapping::for_dataset(&vocab, &var(&["TP53", "XYZ1", "GAPDH"]), None).unwrap();
        assert_eq!(m.vocab_to_col(), &[Some(2), Some(0), None]);
        assert_eq!(m.panel(), vec![0, 1]);
        assert_eq!(report.unmatched_dataset, vec!["XYZ1".to_string()]);
        let text = report.report().to_string();
        assert!(text.contains("matched 2 of 3"), "{text}");
    }

    #[test]
    fn the_gene_ids_column_is_used_when_it_matches_more() {
        let vocab = vec!["ENSG00000111640".to_string(), "ENSG00000141510".to_string()];
        let mut v = var(&["a", "b"]);
        v.insert("gene_ids", Column::Str(vec!["ENSG00000141510.3".into(), "ENSG00000111640".into()])).unwrap();
        let (m, _) = GeneMapping::for_dataset(&vocab, &v, None).unwrap();
        assert_eq!(m.vocab_to_col(), &[Some(1), Some(0)]);
        let e = GeneMapping::for_dataset(&vocab, &v, Some("nope")).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
    }

    #[test]
    fn remap_sorts_rows_onto_the_vocabulary() {
        let m = GeneMapping::new(vec![Some(2), None, Some(0)], 3).unwrap();
        let x = CsrMatrix::new(1, 3, vec![0, 2], vec![0, 2], vec![5.0, 7.0]).unwrap();
        assert_eq!(m.remap(&x, &[0]), (vec![0, 2], vec![0, 2], vec![7.0, 5.0]));
        assert!(GeneMapping::new(vec![None, None], 3).is_err());
        assert!(GeneMapping::new(vec![Some(3)], 3).is_err());
    }
}
