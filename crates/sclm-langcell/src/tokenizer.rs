//! Geneformer's rank-value encoding (Theodoris et al. 2023), as LangCell feeds its cell encoder
//! (PharMolix/LangCell@69e41ef: `LangCellTranscriptomeTokenizer.tokenize_anndata` and the
//! collator that prepends `<cls>` and truncates to 2,048).
//!
//! A cell's counts over the genes that have a median are divided by the cell's raw total over
//! *all* genes (before genes without a median are dropped), multiplied by 10,000 and divided by
//! each gene's median; zeros are dropped, the genes are sorted by that value, largest first,
//! and their token ids follow `<cls>`. Values are computed in `f64` in the published order of
//! operations (`x / n_counts * 10000 / median`).
//!
//! Ties: the published sort (`np.argsort`, quicksort) is not stable, so genes with equal values
//! come out in an order that depends on the input's gene order. Here ties are broken by token
//! id (smaller first), so a cell's tokens do not depend on how the dataset orders its genes.
//!
//! Token ids: `<pad>` = 0, `<mask>` = 1, genes from [`FIRST_GENE_TOKEN`] in vocabulary order,
//! `<cls>` after the last gene (25,426 in the published vocabulary of 25,424 genes).
use std::path::Path;

use sclm_nn::embedding::CsrRows;

use crate::error::{LangCellError, Result};

/// Token id of padding.
pub const PAD_TOKEN: u32 = 0;
/// Token id of `<mask>` (masked gene modelling).
pub const MASK_TOKEN: u32 = 1;
/// Token id of the first gene.
pub const FIRST_GENE_TOKEN: u32 = 2;
/// The scale of the published normalisation (counts per 10,000).
pub const SCALE: f64 = 10_000.0;

/// The gene vocabulary with its medians, and the tokenizer over it.
#[derive(Debug, Clone, PartialEq)]
pub struct RankValueTokenizer {
    genes: Vec<String>,
    medians: Vec<f64>,
    max_tokens: usize,
}

impl RankValueTokenizer {
    /// A tokenizer over `genes` (token `FIRST_GENE_TOKEN + i` is `genes[i]`) with their
    /// non-zero medians; cells become at most `max_tokens` tokens including `<cls>`.
    pub fn new(genes: Vec<String>, medians: Vec<f64>, max_tokens: usize) -> Result<Self> {
        if genes.is_empty() || genes.len() != medians.len() {
            return Err(LangCellError::Config(format!(
                "{} genes but {} medians (one positive median per gene)",
                genes.len(),
                medians.len()
            )));
        }
        if let Some((g, m)) = genes.iter().zip(&medians).find(|(_, m)| !(m.is_finite() && **m > 0.0)) {
            return Err(LangCellError::Config(format!("gene {g} has median {m}; medians must be positive and finite")));
        }
        if max_tokens < 2 {
            return Err(LangCellError::Config("max_tokens must be at least 2 (<cls> and one gene)".into()));
        }
        Ok(RankValueTokenizer { genes, medians, max_tokens })
    }

    /// Reads the published Geneformer files: the token dictionary (`token<TAB>id`, `<pad>` = 0,
    /// `<mask>` = 1, genes from 2 with consecutive ids) and the median dictionary
    /// (`ensembl_id<TAB>median`), as in `../shared/resources/langcell/`. Every gene of the
    /// dictionary must have a median.
    pub fn from_geneformer_files(token_dictionary: &Path, medians: &Path, max_tokens: usize) -> Result<Self> {
        let tokens = read_tsv2(token_dictionary)?;
        let mut genes: Vec<String> = Vec::with_capacity(tokens.len());
        for (line, (tok, id)) in tokens.iter().enumerate() {
            let id: usize = id.parse().map_err(|_| {
                LangCellError::parse(token_dictionary, format!("line {}: id '{id}' is not an integer", line + 1))
            })?;
            match tok.as_str() {
                "<pad>" if id == PAD_TOKEN as usize => {}
                "<mask>" if id == MASK_TOKEN as usize => {}
                "<pad>" | "<mask>" => {
                    return Err(LangCellError::parse(token_dictionary, format!("{tok} has id {id}")));
                }
                _ => {
                    if id != FIRST_GENE_TOKEN as usize + genes.len() {
                        return Err(LangCellError::parse(
                            token_dictionary,
                            format!(
                                "line {}: gene {tok} has id {id}, expected {} (ids must be consecutive from 2)",
                                line + 1,
                                FIRST_GENE_TOKEN as usize + genes.len()
                            ),
                        ));
                    }
                    genes.push(tok.clone());
                }
            }
        }
        let med: std::collections::HashMap<String, f64> = read_tsv2(medians)?
            .into_iter()
            .enumerate()
            .map(|(line, (g, v))| {
                v.parse::<f64>()
                    .map(|v| (g, v))
                    .map_err(|_| LangCellError::parse(medians, format!("line {}: '{v}' is not a number", line + 1)))
            })
            .collect::<Result<_>>()?;
        let mut values = Vec::with_capacity(genes.len());
        for g in &genes {
            values.push(*med.get(g).ok_or_else(|| {
                LangCellError::parse(medians, format!("gene {g} of {} has no median", token_dictionary.display()))
            })?);
        }
        Self::new(genes, values, max_tokens)
    }

    /// The genes in token order.
    pub fn genes(&self) -> &[String] {
        &self.genes
    }

    /// The median of each gene.
    pub fn medians(&self) -> &[f64] {
        &self.medians
    }

    /// Longest output including `<cls>`.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The `<cls>` token id.
    pub fn cls_token(&self) -> u32 {
        FIRST_GENE_TOKEN + self.genes.len() as u32
    }

    /// Rows of a token embedding over this vocabulary (`<pad>`, `<mask>`, genes, `<cls>`).
    pub fn vocab_size(&self) -> usize {
        self.genes.len() + FIRST_GENE_TOKEN as usize + 1
    }

    /// The tokens of one cell: `<cls>` then its expressed genes by decreasing normalised value
    /// (ties by token id), `max_tokens` at most.
    ///
    /// # Shapes
    /// - `genes`, `counts`: the cell's stored entries (vocabulary index, raw count)
    /// - `total`: the cell's raw total over all genes of the dataset
    pub fn tokenize(&self, genes: &[u32], counts: &[f32], total: f32) -> Vec<u32> {
        let total = total as f64;
        let mut v: Vec<(f64, u32)> = genes
            .iter()
            .zip(counts)
            .filter(|(_, &c)| c > 0.0)
            .map(|(&g, &c)| (c as f64 / total * SCALE / self.medians[g as usize], g))
            .collect();
        v.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut out = Vec::with_capacity(v.len().min(self.max_tokens - 1) + 1);
        out.push(self.cls_token());
        out.extend(v.iter().take(self.max_tokens - 1).map(|&(_, g)| FIRST_GENE_TOKEN + g));
        out
    }

    /// The tokens of every row (row totals from [`CsrRows::row_total`]). A cell that expresses
    /// no gene of the vocabulary is an error naming its row within `rows`.
    pub fn tokenize_rows(&self, rows: &CsrRows<'_>) -> Result<Vec<Vec<u32>>> {
        if rows.n_cols != self.genes.len() {
            return Err(LangCellError::Input(format!(
                "counts have {} columns, the vocabulary {} genes",
                rows.n_cols,
                self.genes.len()
            )));
        }
        (0..rows.n_rows())
            .map(|i| {
                let (a, b) = (rows.indptr[i], rows.indptr[i + 1]);
                let t = self.tokenize(&rows.indices[a..b], &rows.data[a..b], rows.row_total(i));
                if t.len() < 2 {
                    return Err(LangCellError::Input(format!(
                        "cell {i} of a batch expresses no gene of the LangCell vocabulary: remove empty cells \
                         (e.g. sc.pp.filter_cells(adata, min_genes=1)) or check the gene identifiers"
                    )));
                }
                Ok(t)
            })
            .collect()
    }

    /// Writes `gene<TAB>median` lines in token order (`gene_medians.tsv` of a model directory).
    pub fn medians_tsv(&self) -> String {
        let mut s = String::new();
        for (g, m) in self.genes.iter().zip(&self.medians) {
            s.push_str(g);
            s.push('\t');
            // Shortest repr that round-trips.
            s.push_str(&format!("{m:?}"));
            s.push('\n');
        }
        s
    }

    /// Reads `gene_medians.tsv` written by [`RankValueTokenizer::medians_tsv`].
    pub fn from_medians_tsv(path: &Path, max_tokens: usize) -> Result<Self> {
        let rows = read_tsv2(path)?;
        let mut genes = Vec::with_capacity(rows.len());
        let mut medians = Vec::with_capacity(rows.len());
        for (line, (g, v)) in rows.into_iter().enumerate() {
            let m: f64 = v
                .parse()
                .map_err(|_| LangCellError::parse(path, format!("line {}: '{v}' is not a number", line + 1)))?;
            genes.push(g);
            medians.push(m);
        }
        Self::new(genes, medians, max_tokens)
    }
}

/// Lines of a two-column TSV (empty lines skipped).
fn read_tsv2(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| LangCellError::io(path, e))?;
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let mut it = line.split('\t');
        match (it.next(), it.next()) {
            (Some(a), Some(b)) if !a.is_empty() => out.push((a.to_string(), b.trim().to_string())),
            _ => return Err(LangCellError::parse(path, format!("line {}: expected two tab-separated columns", i + 1))),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok() -> RankValueTokenizer {
        RankValueTokenizer::new(vec!["A".into(), "B".into(), "C".into(), "D".into()], vec![1.0, 2.0, 0.5, 1.0], 4)
            .unwrap()
    }

    #[test]
    fn ranks_by_normalised_value_with_ties_by_token() {
        let t = tok();
        // counts A=2, B=4, C=1, D=2 over a total of 128: every normalised value is 156.25 (exact).
        let out = t.tokenize(&[3, 0, 1, 2], &[2.0, 2.0, 4.0, 1.0], 128.0);
        assert_eq!(out, vec![6, 2, 3, 4]); // <cls>=6, then A, B, C (ties by token id), D cut by max_tokens
                                           // Distinct values: C first (4/0.5), then D (3), then A (1); zeros dropped.
        let out = t.tokenize(&[0, 1, 2, 3], &[1.0, 0.0, 2.0, 3.0], 10.0);
        assert_eq!(out, vec![6, 4, 5, 2]);
    }

    #[test]
    fn rejects_bad_medians() {
        assert!(RankValueTokenizer::new(vec!["A".into()], vec![0.0], 4).is_err());
        assert!(RankValueTokenizer::new(vec!["A".into()], vec![f64::NAN], 4).is_err());
    }
}
