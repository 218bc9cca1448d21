//! Gene identifiers: unique var names, the embedded GENCODE v44 table, and matching of a
//! dataset's genes to a model's gene vocabulary by symbol or Ensembl id.

use std::collections::HashMap;
use std::fmt;
use std::io::Read;
use std::sync::OnceLock;

use sclm_data::{AnnData, Matrix};
use serde::{Deserialize, Serialize};

use crate::{PreprocessError, Result};

/// Makes `var_names` unique as anndata's `var_names_make_unique` (`A`, `A-1`, `A-2`, …) and
/// returns the names that were duplicated (empty when already unique), for a warning.
pub fn make_var_names_unique(adata: &mut AnnData) -> Vec<String> {
    adata.var.make_index_unique()
}

static GENCODE_GZ: &[u8] = include_bytes!("../data/gencode_v44_gene_id2name.csv.gz");

/// The GENCODE v44 human gene id ↔ symbol table (see `data/README.md`).
#[derive(Debug)]
pub struct Gencode {
    id_to_symbol: HashMap<String, String>,
    symbol_to_ids: HashMap<String, Vec<String>>,
    upper_to_symbols: HashMap<String, Vec<String>>,
}

impl Gencode {
    fn parse(text: &str) -> Self {
        let mut id_to_symbol = HashMap::new();
        let mut symbol_to_ids: HashMap<String, Vec<String>> = HashMap::new();
        for line in text.lines() {
            let Some((id, sym)) = line.trim().split_once(',') else { continue };
            id_to_symbol.insert(id.to_string(), sym.to_string());
            symbol_to_ids.entry(sym.to_string()).or_default().push(id.to_string());
        }
        let mut upper_to_symbols: HashMap<String, Vec<String>> = HashMap::new();
        for s in symbol_to_ids.keys() {
            upper_to_symbols.entry(s.to_uppercase()).or_default().push(s.clone());
        }
        Gencode { id_to_symbol, symbol_to_ids, upper_to_symbols }
    }

    /// The symbol of an Ensembl gene id (a version suffix is ignored).
    pub fn symbol(&self, ensembl_id: &str) -> Option<&str> {
        self.id_to_symbol.get(strip_version(ensembl_id)).map(|s| s.as_str())
    }

    /// The Ensembl ids of a symbol (exact case; several for a few symbols).
    pub fn ensembl_ids(&self, symbol: &str) -> &[String] {
        self.symbol_to_ids.get(symbol).map(|v| v.as_slice()).unwrap_or(&[])
    }

    /// The Ensembl ids of a symbol, trying the exact case first, then any case.
    pub fn ensembl_ids_any_case(&self, symbol: &str) -> Vec<&str> {
        let exact = self.ensembl_ids(symbol);
        if !exact.is_empty() {
            return exact.iter().map(|s| s.as_str()).collect();
        }
        self.upper_to_symbols
            .get(&symbol.to_uppercase())
            .map(|syms| syms.iter().flat_map(|s| self.ensembl_ids(s)).map(|s| s.as_str()).collect())
            .unwrap_or_default()
    }

    /// Number of gene ids in the table.
    pub fn len(&self) -> usize {
        self.id_to_symbol.len()
    }

    /// True when the table is empty (never, for the embedded table).
    pub fn is_empty(&self) -> bool {
        self.id_to_symbol.is_empty()
    }
}

/// The embedded GENCODE v44 table, decompressed and parsed on first use.
pub fn gencode() -> &'static Gencode {
    static TABLE: OnceLock<Gencode> = OnceLock::new();
    TABLE.get_or_init(|| {
        let mut text = String::new();
        flate2::read::GzDecoder::new(GENCODE_GZ)
            .read_to_string(&mut text)
            .expect("the embedded GENCODE table is valid gzip-compressed UTF-8");
        Gencode::parse(&text)
    })
}

/// True for an Ensembl gene id (`ENSG00000141510`, `ENSMUSG00000029580.14`, …).
pub fn is_ensembl(id: &str) -> bool {
    let base = strip_version_any(id);
    base.starts_with("ENS") && base.len() >= 12 && base[base.len() - 11..].bytes().all(|b| b.is_ascii_digit())
}

fn strip_version_any(id: &str) -> &str {
    match id.rsplit_once('.') {
        Some((base, v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => base,
        _ => id,
    }
}

/// Drops the version suffix of an Ensembl id (`ENSG00000141510.12` → `ENSG00000141510`);
/// other names are returned unchanged.
pub fn strip_version(id: &str) -> &str {
    let base = strip_version_any(id);
    if base.len() != id.len() && is_ensembl(base) {
        base
    } else {
        id
    }
}

/// A model's gene vocabulary (in model order).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeneVocab {
    /// Gene identifiers, symbols or Ensembl ids.
    pub genes: Vec<String>,
}

impl GeneVocab {
    /// A vocabulary from its genes.
    pub fn new(genes: Vec<String>) -> Self {
        GeneVocab { genes }
    }

    /// Matches a dataset's genes to this vocabulary (see [`match_genes`]).
    pub fn match_dataset(&self, dataset_genes: &[String], opts: &GeneMatchOptions) -> Result<GeneMatch> {
        match_genes(dataset_genes, &self.genes, opts)
    }
}

/// Options of [`match_genes`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GeneMatchOptions {
    /// Match symbols whose case differs (after exact matches; default true).
    pub case_insensitive: bool,
    /// Map between symbols and Ensembl ids through GENCODE v44 (default true).
    pub use_gencode: bool,
}

impl Default for GeneMatchOptions {
    fn default() -> Self {
        GeneMatchOptions { case_insensitive: true, use_gencode: true }
    }
}

/// How a vocabulary entry was matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MatchKind {
    /// Same identifier (Ensembl versions ignored).
    Exact,
    /// Same symbol up to case.
    CaseInsensitive,
    /// Symbol ↔ Ensembl id through GENCODE.
    Gencode,
}

/// The result of [`match_genes`].
#[derive(Debug, Clone, PartialEq)]
pub struct GeneMatch {
    /// For each vocabulary entry, the matched dataset column and how, or `None`.
    pub vocab_to_dataset: Vec<Option<(usize, MatchKind)>>,
    /// Number of vocabulary entries matched.
    pub n_matched: usize,
    /// Vocabulary size.
    pub n_vocab: usize,
    /// Number of dataset genes.
    pub n_dataset: usize,
    /// Dataset genes matched to no vocabulary entry, in dataset order.
    pub unmatched_dataset: Vec<String>,
    /// Vocabulary entries with no dataset gene, in vocabulary order.
    pub unmatched_vocab: Vec<String>,
    /// Remarks (e.g. mouse genes that GENCODE v44 cannot map).
    pub notes: Vec<String>,
}

impl GeneMatch {
    /// For each vocabulary entry, the dataset column (or `None`).
    pub fn columns(&self) -> Vec<Option<usize>> {
        self.vocab_to_dataset.iter().map(|m| m.map(|(c, _)| c)).collect()
    }

    /// Number of matches of one kind.
    pub fn count(&self, kind: MatchKind) -> usize {
        self.vocab_to_dataset.iter().filter(|m| matches!(m, Some((_, k)) if *k == kind)).count()
    }

    /// A printable summary.
    pub fn report(&self) -> GeneMatchReport<'_> {
        GeneMatchReport(self)
    }

    /// The dataset matrix (cells × dataset genes) re-indexed to the vocabulary: column `v`
    /// holds the dataset gene matched to vocabulary entry `v`, or zeros. CSR in, CSR out;
    /// dense in, dense out.
    pub fn align(&self, x: &Matrix) -> Result<Matrix> {
        let (n, g) = x.shape();
        if g != self.n_dataset {
            return Err(crate::invalid(
                "align genes",
                format!("the matrix has {g} genes but the match was computed for {} dataset genes", self.n_dataset),
            ));
        }
        let mut to_vocab = vec![u32::MAX; g];
        for (v, m) in self.vocab_to_dataset.iter().enumerate() {
            if let Some((c, _)) = m {
                to_vocab[*c] = v as u32;
            }
        }
        let nv = self.n_vocab;
        Ok(match x {
            Matrix::Csr(c) => {
                let mut indptr = Vec::with_capacity(n + 1);
                indptr.push(0);
                let (mut indices, mut data) = (Vec::new(), Vec::new());
                let mut buf: Vec<(u32, f32)> = Vec::new();
                for i in 0..n {
                    let (idx, val) = c.row(i);
                    buf.clear();
                    buf.extend(idx.iter().zip(val).filter_map(|(&j, &v)| {
                        let t = to_vocab[j as usize];
                        (t != u32::MAX).then_some((t, v))
                    }));
                    buf.sort_unstable_by_key(|p| p.0);
                    indices.extend(buf.iter().map(|p| p.0));
                    data.extend(buf.iter().map(|p| p.1));
                    indptr.push(data.len());
                }
                Matrix::Csr(sclm_data::CsrMatrix::new(n, nv, indptr, indices, data)?)
            }
            Matrix::Dense(d) => {
                let mut out = sclm_data::Dense::<f32>::zeros(n, nv);
                for i in 0..n {
                    let src = d.row(i);
                    let dst = out.row_mut(i);
                    for (c, &t) in to_vocab.iter().enumerate() {
                        if t != u32::MAX {
                            dst[t as usize] = src[c];
                        }
                    }
                }
                Matrix::Dense(out)
            }
        })
    }
}

/// Display summary of a [`GeneMatch`]: counts and the first unmatched genes.
pub struct GeneMatchReport<'a>(pub &'a GeneMatch);

fn examples(v: &[String], n: usize) -> String {
    let mut s = v.iter().take(n).map(|g| g.as_str()).collect::<Vec<_>>().join(", ");
    if v.len() > n {
        s.push_str(&format!(", … ({} more)", v.len() - n));
    }
    if s.is_empty() {
        s.push_str("none");
    }
    s
}

impl fmt::Display for GeneMatchReport<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "matched {} of {} vocabulary genes ({:.1}%) from {} dataset genes [exact {}, case-insensitive {}, via GENCODE {}]; unmatched dataset genes: {}",
            m.n_matched,
            m.n_vocab,
            100.0 * m.n_matched as f64 / m.n_vocab.max(1) as f64,
            m.n_dataset,
            m.count(MatchKind::Exact),
            m.count(MatchKind::CaseInsensitive),
            m.count(MatchKind::Gencode),
            examples(&m.unmatched_dataset, 5)
        )?;
        for n in &m.notes {
            write!(f, "; {n}")?;
        }
        Ok(())
    }
}

/// True for mouse-style identifiers: `ENSMUSG…` ids or `Actb`-style symbols.
fn looks_mouse(genes: &[String]) -> bool {
    let sample: Vec<&String> = genes.iter().take(2000).collect();
    if sample.is_empty() {
        return false;
    }
    let mus = sample.iter().filter(|g| g.starts_with("ENSMUSG")).count();
    let title = sample
        .iter()
        .filter(|g| {
            let mut c = g.chars();
            matches!(c.next(), Some(ch) if ch.is_ascii_uppercase())
                && c.clone().any(|ch| ch.is_ascii_lowercase())
                && !c.any(|ch| ch.is_ascii_uppercase())
        })
        .count();
    mus * 2 > sample.len() || title * 2 > sample.len()
}

/// Matches `dataset_genes` (var names) to `vocab` (a model's genes, in model order).
///
/// Identifiers may be symbols or Ensembl ids on either side. Passes, each using only dataset
/// genes not yet taken: (1) exact identifiers, Ensembl version suffixes ignored
/// (`ENSG…​.12` = `ENSG…`); (2) symbols up to case; (3) through GENCODE v44, a vocabulary
/// Ensembl id to the dataset's symbol (exact case, then any case) or a vocabulary symbol to
/// one of its Ensembl ids in the dataset. A dataset gene is matched at most once; duplicated
/// dataset names keep their first column. Zero overlap is an error that shows examples of
/// both sides.
pub fn match_genes(dataset_genes: &[String], vocab: &[String], opts: &GeneMatchOptions) -> Result<GeneMatch> {
    let key = |s: &str| strip_version(s).to_string();
    let mut exact: HashMap<String, usize> = HashMap::new();
    let mut upper: HashMap<String, usize> = HashMap::new();
    for (c, g) in dataset_genes.iter().enumerate() {
        exact.entry(key(g)).or_insert(c);
        if !is_ensembl(g) {
            upper.entry(g.to_uppercase()).or_insert(c);
        }
    }
    let mut used = vec![false; dataset_genes.len()];
    let mut out: Vec<Option<(usize, MatchKind)>> = vec![None; vocab.len()];
    let take = |out: &mut Vec<Option<(usize, MatchKind)>>,
                v: usize,
                c: Option<usize>,
                kind: MatchKind,
                used: &mut Vec<bool>|
     -> bool {
        match c {
            Some(c) if !used[c] => {
                used[c] = true;
                out[v] = Some((c, kind));
                true
            }
            _ => false,
        }
    };
    for (v, g) in vocab.iter().enumerate() {
        let c = exact.get(&key(g)).copied();
        take(&mut out, v, c, MatchKind::Exact, &mut used);
    }
    if opts.case_insensitive {
        for (v, g) in vocab.iter().enumerate() {
            if out[v].is_none() && !is_ensembl(g) {
                let c = upper.get(&g.to_uppercase()).copied();
                take(&mut out, v, c, MatchKind::CaseInsensitive, &mut used);
            }
        }
    }
    let table = if opts.use_gencode { Some(gencode()) } else { None };
    if let Some(t) = table {
        for (v, g) in vocab.iter().enumerate() {
            if out[v].is_some() {
                continue;
            }
            if is_ensembl(g) {
                if let Some(sym) = t.symbol(g) {
                    let c = exact.get(sym).copied().filter(|&c| !used[c]).or_else(|| {
                        if opts.case_insensitive {
                            upper.get(&sym.to_uppercase()).copied()
                        } else {
                            None
                        }
                    });
                    take(&mut out, v, c, MatchKind::Gencode, &mut used);
                }
            } else {
                let ids = if opts.case_insensitive {
                    t.ensembl_ids_any_case(g)
                } else {
                    t.ensembl_ids(g).iter().map(|s| s.as_str()).collect()
                };
                for id in ids {
                    let c = exact.get(id).copied();
                    if take(&mut out, v, c, MatchKind::Gencode, &mut used) {
                        break;
                    }
                }
            }
        }
    }
    let n_matched = out.iter().filter(|m| m.is_some()).count();
    let unmatched_dataset: Vec<String> =
        dataset_genes.iter().zip(&used).filter(|(_, u)| !**u).map(|(g, _)| g.clone()).collect();
    let unmatched_vocab: Vec<String> =
        vocab.iter().zip(&out).filter(|(_, m)| m.is_none()).map(|(g, _)| g.clone()).collect();
    let mut notes = Vec::new();
    if looks_mouse(dataset_genes) && !looks_mouse(vocab) {
        notes.push("the dataset genes look like mouse genes (ENSMUSG ids or Actb-style symbols); GENCODE v44 is human-only, so only symbols equal up to case can match".to_string());
    }
    let ens_d = dataset_genes.iter().take(1000).filter(|g| is_ensembl(g)).count() * 2 > dataset_genes.len().min(1000);
    let ens_v = vocab.iter().take(1000).filter(|g| is_ensembl(g)).count() * 2 > vocab.len().min(1000);
    if ens_d != ens_v && !opts.use_gencode {
        notes.push("one side uses Ensembl ids and the other symbols; enable use_gencode to map them".to_string());
    }
    if n_matched == 0 {
        let hint = if notes.is_empty() { String::new() } else { format!("; {}", notes.join("; ")) };
        return Err(PreprocessError::NoGeneOverlap {
            n_dataset: dataset_genes.len(),
            n_vocab: vocab.len(),
            dataset_examples: examples(dataset_genes, 5),
            vocab_examples: examples(vocab, 5),
            hint,
        });
    }
    Ok(GeneMatch {
        vocab_to_dataset: out,
        n_matched,
        n_vocab: vocab.len(),
        n_dataset: dataset_genes.len(),
        unmatched_dataset,
        unmatched_vocab,
        notes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn gencode_table_maps_both_ways() {
        let t = gencode();
        assert!(t.len() > 60_000, "{}", t.len());
        assert_eq!(t.symbol("ENSG00000141510"), Some("TP53"));
        assert_eq!(t.symbol("ENSG00000141510.18"), Some("TP53"));
        assert_eq!(t.ensembl_ids("TP53"), &["ENSG00000141510".to_string()]);
        assert_eq!(t.ensembl_ids_any_case("tp53"), vec!["ENSG00000141510"]);
        assert!(t.symbol("ENSG99999999999").is_none());
    }

    #[test]
    fn ensembl_id_detection_and_versions() {
        assert!(is_ensembl("ENSG00000141510"));
        assert!(is_ensembl("ENSG00000141510.12"));
        assert!(is_ensembl("ENSMUSG00000029580"));
        assert!(!is_ensembl("TP53"));
        assert!(!is_ensembl("ENSA"));
        assert_eq!(strip_version("ENSG00000141510.12"), "ENSG00000141510");
        assert_eq!(strip_version("HLA-A.1"), "HLA-A.1");
    }

    #[test]
    fn symbols_to_ensembl_vocab_and_back() {
        let dataset = s(&["TP53", "GAPDH", "NOTAGENE", "ACTB"]);
        let vocab = s(&["ENSG00000111640", "ENSG00000141510.5", "ENSG00000075624", "ENSG00000000003"]);
        let m = match_genes(&dataset, &vocab, &GeneMatchOptions::default()).unwrap();
        // GAPDH = ENSG00000111640, TP53 = ENSG00000141510, ACTB = ENSG00000075624
        assert_eq!(m.columns(), vec![Some(1), Some(0), Some(3), None]);
        assert_eq!(m.n_matched, 3);
        assert_eq!(m.count(MatchKind::Gencode), 3);
        assert_eq!(m.unmatched_dataset, s(&["NOTAGENE"]));
        assert_eq!(m.unmatched_vocab, s(&["ENSG00000000003"]));
        // the reverse: Ensembl (versioned) dataset, symbol vocabulary
        let dataset = s(&["ENSG00000141510.18", "ENSG00000111640.15"]);
        let vocab = s(&["GAPDH", "TP53", "CD3E"]);
        let m = match_genes(&dataset, &vocab, &GeneMatchOptions::default()).unwrap();
        assert_eq!(m.columns(), vec![Some(1), Some(0), None]);
        // re-index a matrix to the vocabulary (missing genes are zero columns)
        let x = sclm_data::Matrix::Dense(sclm_data::Dense::from_vec(1, 2, vec![5.0, 7.0]).unwrap());
        let a = m.align(&x).unwrap();
        assert_eq!(a.to_dense().data, vec![7.0, 5.0, 0.0]);
        let a2 = m.align(&sclm_data::Matrix::Csr(x.to_csr())).unwrap();
        assert_eq!(a2.to_dense(), a.to_dense());
        assert!(m.align(&sclm_data::Matrix::Dense(sclm_data::Dense::zeros(1, 3))).is_err());
        let text = m.report().to_string();
        assert!(text.contains("matched 2 of 3") && text.contains("via GENCODE 2"), "{text}");
        // without GENCODE nothing matches: an error with examples of both sides
        let e = match_genes(&dataset, &vocab, &GeneMatchOptions { use_gencode: false, ..Default::default() })
            .unwrap_err()
            .to_string();
        assert!(e.contains("ENSG00000141510.18") && e.contains("GAPDH") && e.contains("use_gencode"), "{e}");
    }

    #[test]
    fn exact_before_case_insensitive_and_versions_ignored() {
        let dataset = s(&["Cd3e", "CD3E", "ENSG00000141510.3", "ENSG00000141510.4"]);
        let vocab = s(&["CD3E", "cd3e", "ENSG00000141510"]);
        let m = match_genes(&dataset, &vocab, &GeneMatchOptions::default()).unwrap();
        assert_eq!(m.vocab_to_dataset[0], Some((1, MatchKind::Exact)));
        assert_eq!(m.vocab_to_dataset[1], Some((0, MatchKind::CaseInsensitive)));
        // duplicated ids keep the first column
        assert_eq!(m.vocab_to_dataset[2], Some((2, MatchKind::Exact)));
        assert_eq!(m.unmatched_dataset, s(&["ENSG00000141510.4"]));
        let strict = GeneMatchOptions { case_insensitive: false, use_gencode: false };
        let m = match_genes(&dataset, &vocab, &strict).unwrap();
        assert_eq!(m.columns(), vec![Some(1), None, Some(2)]);
    }

    #[test]
    fn mouse_genes_are_reported() {
        let dataset = s(&["Actb", "Gapdh", "Trp53", "ENSMUSG00000029580"]);
        let vocab = s(&["ENSG00000075624", "ENSG00000111640"]);
        let m = match_genes(&dataset, &vocab, &GeneMatchOptions::default()).unwrap();
        // Actb/Gapdh match the human symbols ACTB/GAPDH up to case only through GENCODE
        assert_eq!(m.n_matched, 2);
        assert!(m.notes.iter().any(|n| n.contains("mouse")), "{:?}", m.notes);
        let e =
            match_genes(&s(&["Trp53", "Xist2"]), &s(&["ENSG00000075624"]), &GeneMatchOptions::default()).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("mouse") && text.contains("Trp53") && text.contains("ENSG00000075624"), "{text}");
    }

    #[test]
    fn unique_var_names_report_duplicates() {
        let mut ad = AnnData::new(sclm_data::Matrix::Dense(sclm_data::Dense::zeros(1, 3)));
        ad.var.index = s(&["A", "B", "A"]);
        assert_eq!(make_var_names_unique(&mut ad), s(&["A"]));
        assert_eq!(ad.var.index, s(&["A", "B", "A-1"]));
        assert!(make_var_names_unique(&mut ad).is_empty());
    }
}
