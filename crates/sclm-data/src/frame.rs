//! Annotation tables (`obs`, `var`): an index of names plus typed columns.

use crate::{available_hint, DataError, Result};

/// One column of a [`DataFrame`].
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// Strings.
    Str(Vec<String>),
    /// 64-bit floats.
    F64(Vec<f64>),
    /// 32-bit floats.
    F32(Vec<f32>),
    /// 64-bit integers.
    I64(Vec<i64>),
    /// 32-bit integers.
    I32(Vec<i32>),
    /// Booleans.
    Bool(Vec<bool>),
    /// Categorical: a code per row (−1 = missing) into `categories`.
    Categorical {
        /// Category code of each row; −1 marks a missing value.
        codes: Vec<i32>,
        /// Category names.
        categories: Vec<String>,
        /// Whether the categories are ordered.
        ordered: bool,
    },
}

impl Column {
    /// Number of rows.
    pub fn len(&self) -> usize {
        match self {
            Column::Str(v) => v.len(),
            Column::F64(v) => v.len(),
            Column::F32(v) => v.len(),
            Column::I64(v) => v.len(),
            Column::I32(v) => v.len(),
            Column::Bool(v) => v.len(),
            Column::Categorical { codes, .. } => codes.len(),
        }
    }

    /// True when the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A short name of the column's type, for reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Column::Str(_) => "string",
            Column::F64(_) => "float64",
            Column::F32(_) => "float32",
            Column::I64(_) => "int64",
            Column::I32(_) => "int32",
            Column::Bool(_) => "bool",
            Column::Categorical { .. } => "category",
        }
    }

    /// Each row as a label string (categoricals give their category, missing gives `""`;
    /// numbers are formatted). Useful for cell-type or batch labels.
    pub fn to_labels(&self) -> Vec<String> {
        match self {
            Column::Str(v) => v.clone(),
            Column::F64(v) => v.iter().map(|x| x.to_string()).collect(),
            Column::F32(v) => v.iter().map(|x| x.to_string()).collect(),
            Column::I64(v) => v.iter().map(|x| x.to_string()).collect(),
            Column::I32(v) => v.iter().map(|x| x.to_string()).collect(),
            Column::Bool(v) => v.iter().map(|x| x.to_string()).collect(),
            Column::Categorical { codes, categories, .. } => {
                codes.iter().map(|&c| if c < 0 { String::new() } else { categories[c as usize].clone() }).collect()
            }
        }
    }

    /// Numeric values as `f64` (`None` for string and categorical columns).
    pub fn to_f64(&self) -> Option<Vec<f64>> {
        Some(match self {
            Column::F64(v) => v.clone(),
            Column::F32(v) => v.iter().map(|&x| x as f64).collect(),
            Column::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Column::I32(v) => v.iter().map(|&x| x as f64).collect(),
            Column::Bool(v) => v.iter().map(|&x| x as u8 as f64).collect(),
            Column::Str(_) | Column::Categorical { .. } => return None,
        })
    }

    /// Builds a categorical column from labels, categories sorted as pandas sorts them.
    pub fn categorical_from_labels<S: AsRef<str>>(labels: &[S]) -> Column {
        let mut categories: Vec<String> = labels.iter().map(|s| s.as_ref().to_string()).collect();
        categories.sort();
        categories.dedup();
        let codes = labels
            .iter()
            .map(|s| categories.binary_search_by(|c| c.as_str().cmp(s.as_ref())).unwrap() as i32)
            .collect();
        Column::Categorical { codes, categories, ordered: false }
    }

    /// Keeps the rows listed in `rows`, in that order.
    pub fn select_rows(&self, rows: &[usize]) -> Column {
        fn pick<T: Clone>(v: &[T], rows: &[usize]) -> Vec<T> {
            rows.iter().map(|&r| v[r].clone()).collect()
        }
        match self {
            Column::Str(v) => Column::Str(pick(v, rows)),
            Column::F64(v) => Column::F64(pick(v, rows)),
            Column::F32(v) => Column::F32(pick(v, rows)),
            Column::I64(v) => Column::I64(pick(v, rows)),
            Column::I32(v) => Column::I32(pick(v, rows)),
            Column::Bool(v) => Column::Bool(pick(v, rows)),
            Column::Categorical { codes, categories, ordered } => {
                Column::Categorical { codes: pick(codes, rows), categories: categories.clone(), ordered: *ordered }
            }
        }
    }
}

/// A table with a string index and named, typed columns, in column order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct DataFrame {
    /// Row names (cell barcodes for `obs`, gene names for `var`).
    pub index: Vec<String>,
    /// Columns in order.
    pub columns: Vec<(String, Column)>,
}

impl DataFrame {
    /// A table with only an index.
    pub fn new(index: Vec<String>) -> Self {
        DataFrame { index, columns: Vec::new() }
    }

    /// Number of rows.
    pub fn nrows(&self) -> usize {
        self.index.len()
    }

    /// The column named `name`, if any.
    pub fn get(&self, name: &str) -> Option<&Column> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, c)| c)
    }

    /// The column named `name`, or an error that lists the columns that exist.
    pub fn column(&self, name: &str, kind: &'static str) -> Result<&Column> {
        self.get(name).ok_or_else(|| DataError::MissingKey {
            kind,
            key: name.to_string(),
            hint: available_hint(self.columns.iter().map(|(n, _)| n.as_str())),
        })
    }

    /// Adds or replaces a column, checking its length.
    pub fn insert(&mut self, name: impl Into<String>, col: Column) -> Result<()> {
        let name = name.into();
        if col.len() != self.nrows() {
            return Err(DataError::Shape {
                what: format!("column '{name}'"),
                expected: self.nrows().to_string(),
                found: col.len().to_string(),
            });
        }
        match self.columns.iter_mut().find(|(n, _)| *n == name) {
            Some(slot) => slot.1 = col,
            None => self.columns.push((name, col)),
        }
        Ok(())
    }

    /// Column names in order.
    pub fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// Keeps the rows listed in `rows`, in that order.
    pub fn select_rows(&self, rows: &[usize]) -> DataFrame {
        DataFrame {
            index: rows.iter().map(|&r| self.index[r].clone()).collect(),
            columns: self.columns.iter().map(|(n, c)| (n.clone(), c.select_rows(rows))).collect(),
        }
    }

    /// Makes the index unique the way anndata's `make_unique` does: the second occurrence
    /// of `A` becomes `A-1`, the third `A-2`, skipping names already present. Returns the
    /// names that were duplicated (empty when the index was already unique).
    pub fn make_index_unique(&mut self) -> Vec<String> {
        make_unique(&mut self.index, "-")
    }
}

/// Makes names unique as anndata's `utils.make_index_unique` does (join `-`, counters from 1).
/// Returns the distinct names that occurred more than once.
pub fn make_unique(names: &mut [String], join: &str) -> Vec<String> {
    use std::collections::{HashMap, HashSet};
    let mut counts: HashMap<String, usize> = HashMap::new();
    for n in names.iter() {
        *counts.entry(n.clone()).or_default() += 1;
    }
    let mut dups: Vec<String> = counts.iter().filter(|(_, &c)| c > 1).map(|(n, _)| n.clone()).collect();
    if dups.is_empty() {
        return dups;
    }
    dups.sort();
    let mut used: HashSet<String> = names.iter().cloned().collect();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut next: HashMap<String, usize> = HashMap::new();
    for n in names.iter_mut() {
        let k = seen.entry(n.clone()).or_default();
        *k += 1;
        if *k == 1 || counts[n.as_str()] == 1 {
            continue;
        }
        let c = next.entry(n.clone()).or_insert(1);
        loop {
            let cand = format!("{n}{join}{c}");
            *c += 1;
            if !used.contains(&cand) {
                used.insert(cand.clone());
                *n = cand;
                break;
            }
        }
    }
    dups
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_unique_matches_anndata() {
        // anndata: pd.Index(['a','a','b','a','a-1']) -> ['a','a-2','b','a-3','a-1']
        let mut v: Vec<String> = ["a", "a", "b", "a", "a-1"].iter().map(|s| s.to_string()).collect();
        let d = make_unique(&mut v, "-");
        assert_eq!(d, vec!["a".to_string()]);
        assert_eq!(v, vec!["a", "a-2", "b", "a-3", "a-1"]);
    }

    #[test]
    fn categorical_round_trip_and_missing_key_hint() {
        let c = Column::categorical_from_labels(&["T", "B", "T"]);
        assert_eq!(c.to_labels(), vec!["T", "B", "T"]);
        let mut df = DataFrame::new(vec!["c1".into(), "c2".into(), "c3".into()]);
        df.insert("cell_type", c).unwrap();
        let e = df.column("celltype", "obs column").unwrap_err().to_string();
        assert!(e.contains("celltype") && e.contains("cell_type"), "{e}");
        assert!(df.insert("bad", Column::Bool(vec![true])).is_err());
    }
}
