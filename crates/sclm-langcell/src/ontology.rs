//! Class texts from the Cell Ontology, as LangCell writes them: `"cell type: {name}. {definition}"`
//! (PharMolix/LangCell@69e41ef, `type2text.json` of the zero-shot notebook). Dataset labels are
//! matched to ontology terms by name, then by synonym, up to case, spacing, punctuation and a
//! plural `s` ("B cells" → "B cell", "CD14+ Monocytes" → "CD14-positive monocyte" is *not*
//! guessed: such labels are reported as unmatched and need a user table).
use std::collections::HashMap;
use std::path::Path;

use crate::error::{LangCellError, Result};

/// One ontology term.
#[derive(Debug, Clone, PartialEq)]
pub struct Term {
    /// `CL:...`.
    pub id: String,
    /// Preferred name.
    pub name: String,
    /// Definition (may be empty).
    pub definition: String,
    /// Exact and related synonyms.
    pub synonyms: Vec<String>,
}

impl Term {
    /// The published text of the term.
    pub fn text(&self) -> String {
        if self.definition.is_empty() {
            format!("cell type: {}.", self.name)
        } else {
            format!("cell type: {}. {}", self.name, self.definition)
        }
    }
}

/// The Cell Ontology (`id<TAB>name<TAB>definition<TAB>synonyms(|)<TAB>ancestors(|)` with a
/// header line, as `../shared/resources/cell_ontology_*.tsv`).
#[derive(Debug, Clone, Default)]
pub struct Ontology {
    terms: Vec<Term>,
    by_name: HashMap<String, usize>,
    by_synonym: HashMap<String, usize>,
}

/// How each label got its text.
#[derive(Debug, Clone, PartialEq)]
pub enum TextSource {
    /// The user's table.
    User,
    /// The ontology term with this id, by its name.
    Name(String),
    /// The ontology term with this id, by a synonym.
    Synonym(String),
}

/// Labels with texts, and those without.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LabelTexts {
    /// `(label, text, source)` of every matched label, in input order.
    pub matched: Vec<(String, String, TextSource)>,
    /// Labels with no text.
    pub unmatched: Vec<String>,
}

impl LabelTexts {
    /// One line per label: where its text came from, and the unmatched ones.
    pub fn report(&self) -> String {
        let mut s = String::new();
        for (l, _, src) in &self.matched {
            let how = match src {
                TextSource::User => "your table".to_string(),
                TextSource::Name(id) => format!("ontology name {id}"),
                TextSource::Synonym(id) => format!("ontology synonym {id}"),
            };
            s.push_str(&format!("  {l}: {how}\n"));
        }
        if !self.unmatched.is_empty() {
            s.push_str(&format!(
                "  no text for {} label(s): {} (give them a text with a label<TAB>text table)\n",
                self.unmatched.len(),
                self.unmatched.join(", ")
            ));
        }
        s
    }
}

/// Lower case, punctuation as spaces, one space between words, a trailing plural `s` of each
/// word of at least 4 letters removed.
pub fn normalize_label(s: &str) -> String {
    let mapped: String =
        s.chars().map(|c| if c.is_alphanumeric() || c == '+' { c.to_ascii_lowercase() } else { ' ' }).collect();
    mapped
        .split_whitespace()
        .map(|w| if w.len() >= 4 && w.ends_with('s') && !w.ends_with("ss") { &w[..w.len() - 1] } else { w })
        .collect::<Vec<_>>()
        .join(" ")
}

impl Ontology {
    /// Reads the ontology TSV.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| LangCellError::io(path, e))?;
        let mut lines = text.lines();
        let header = lines.next().unwrap_or_default();
        if !header.starts_with("id\tname\tdefinition") {
            return Err(LangCellError::parse(path, "expected the header id<TAB>name<TAB>definition<TAB>synonyms"));
        }
        let mut o = Ontology::default();
        for (i, line) in lines.enumerate() {
            if line.is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split('\t').collect();
            if f.len() < 3 {
                return Err(LangCellError::parse(path, format!("line {}: fewer than 3 columns", i + 2)));
            }
            let synonyms: Vec<String> = f
                .get(3)
                .map(|s| s.split('|').filter(|x| !x.is_empty()).map(String::from).collect())
                .unwrap_or_default();
            let t = Term { id: f[0].into(), name: f[1].into(), definition: f[2].into(), synonyms };
            let k = o.terms.len();
            o.by_name.entry(normalize_label(&t.name)).or_insert(k);
            for s in &t.synonyms {
                o.by_synonym.entry(normalize_label(s)).or_insert(k);
            }
            o.terms.push(t);
        }
        if o.terms.is_empty() {
            return Err(LangCellError::parse(path, "no terms"));
        }
        Ok(o)
    }

    /// Number of terms.
    pub fn len(&self) -> usize {
        self.terms.len()
    }

    /// Whether there are no terms.
    pub fn is_empty(&self) -> bool {
        self.terms.is_empty()
    }

    /// The term a label names (by name first, then synonym), and how.
    pub fn find(&self, label: &str) -> Option<(&Term, bool)> {
        let k = normalize_label(label);
        if let Some(&i) = self.by_name.get(&k) {
            return Some((&self.terms[i], false));
        }
        self.by_synonym.get(&k).map(|&i| (&self.terms[i], true))
    }
}

/// Reads a user table of `label<TAB>text` lines.
pub fn read_text_table(path: &Path) -> Result<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).map_err(|e| LangCellError::io(path, e))?;
    let mut out = HashMap::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (l, t) = line
            .split_once('\t')
            .ok_or_else(|| LangCellError::parse(path, format!("line {}: expected label<TAB>text", i + 1)))?;
        if t.trim().is_empty() {
            return Err(LangCellError::parse(path, format!("line {}: label {l} has an empty text", i + 1)));
        }
        out.insert(l.to_string(), t.trim().to_string());
    }
    Ok(out)
}

/// A text for every label: the user's table first, then the ontology by name, then synonym.
pub fn label_texts(labels: &[String], user: Option<&HashMap<String, String>>, onto: Option<&Ontology>) -> LabelTexts {
    let mut out = LabelTexts::default();
    for l in labels {
        if let Some(t) = user.and_then(|u| u.get(l)) {
            out.matched.push((l.clone(), t.clone(), TextSource::User));
        } else if let Some((term, syn)) = onto.and_then(|o| o.find(l)) {
            let src = if syn { TextSource::Synonym(term.id.clone()) } else { TextSource::Name(term.id.clone()) };
            out.matched.push((l.clone(), term.text(), src));
        } else {
            out.unmatched.push(l.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_case_punctuation_and_plurals() {
        assert_eq!(normalize_label("B cells"), "b cell");
        assert_eq!(normalize_label("CD4-positive, alpha-beta T cell"), "cd4 positive alpha beta t cell");
        assert_eq!(normalize_label("Monocytes"), "monocyte");
        assert_eq!(normalize_label("class"), "class");
    }

    #[test]
    fn matches_by_name_then_synonym_and_reports_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("o.tsv");
        std::fs::write(
            &p,
            "id\tname\tdefinition\tsynonyms\tancestors\nCL:1\tB cell\tA lymphocyte.\tB lymphocyte|B-cell\t\nCL:2\tnatural killer cell\tKills.\tNK cell\t\n",
        )
        .unwrap();
        let o = Ontology::read(&p).unwrap();
        let labels: Vec<String> = ["B cells", "NK cells", "Megakaryocytes"].iter().map(|s| s.to_string()).collect();
        let r = label_texts(&labels, None, Some(&o));
        assert_eq!(r.matched[0].1, "cell type: B cell. A lymphocyte.");
        assert_eq!(r.matched[1].2, TextSource::Synonym("CL:2".into()));
        assert_eq!(r.unmatched, vec!["Megakaryocytes".to_string()]);
        assert!(r.report().contains("Megakaryocytes"));
    }
}
