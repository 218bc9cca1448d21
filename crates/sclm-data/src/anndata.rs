//! The AnnData container.

use std::collections::BTreeMap;

use crate::{available_hint, Array2, DataError, DataFrame, Matrix, Result, Value};

/// The frozen raw counts/values kept beside a processed `X` (`adata.raw`).
#[derive(Debug, Clone, PartialEq)]
pub struct Raw {
    /// The raw matrix (cells × raw genes).
    pub x: Matrix,
    /// Gene annotations of the raw matrix.
    pub var: DataFrame,
    /// Multi-dimensional gene annotations of the raw matrix.
    pub varm: BTreeMap<String, Array2>,
}

/// An annotated data matrix: cells × genes plus annotations, as in Python's `anndata`.
#[derive(Debug, Clone, PartialEq)]
pub struct AnnData {
    /// The main matrix (cells × genes).
    pub x: Matrix,
    /// Cell annotations (one row per cell).
    pub obs: DataFrame,
    /// Gene annotations (one row per gene).
    pub var: DataFrame,
    /// Multi-dimensional cell annotations (`spatial`, `X_pca`, embeddings).
    pub obsm: BTreeMap<String, Array2>,
    /// Multi-dimensional gene annotations.
    pub varm: BTreeMap<String, Array2>,
    /// Other matrices with the shape of `X` (e.g. `counts`).
    pub layers: BTreeMap<String, Matrix>,
    /// Pairwise cell × cell matrices (`n_obs × n_obs`, e.g. neighbour `connectivities` and
    /// `distances`, or an attention graph); rows and columns are both cells.
    pub obsp: BTreeMap<String, Matrix>,
    /// The raw matrix, if stored.
    pub raw: Option<Raw>,
    /// Unstructured metadata.
    pub uns: BTreeMap<String, Value>,
}

impl AnnData {
    /// A new AnnData with empty annotations; obs and var names are `0, 1, ...`.
    pub fn new(x: Matrix) -> Self {
        let (n, g) = x.shape();
        AnnData {
            x,
            obs: DataFrame::new((0..n).map(|i| i.to_string()).collect()),
            var: DataFrame::new((0..g).map(|i| i.to_string()).collect()),
            obsm: BTreeMap::new(),
            varm: BTreeMap::new(),
            layers: BTreeMap::new(),
            obsp: BTreeMap::new(),
            raw: None,
            uns: BTreeMap::new(),
        }
    }

    /// Number of cells.
    pub fn n_obs(&self) -> usize {
        self.x.shape().0
    }

    /// Number of genes.
    pub fn n_vars(&self) -> usize {
        self.x.shape().1
    }

    /// Checks that every part agrees in shape with `X`.
    pub fn validate(&self) -> Result<()> {
        let (n, g) = self.x.shape();
        let check = |what: String, expected: usize, found: usize| {
            if expected != found {
                Err(DataError::Shape { what, expected: expected.to_string(), found: found.to_string() })
            } else {
                Ok(())
            }
        };
        check("obs rows".into(), n, self.obs.nrows())?;
        check("var rows".into(), g, self.var.nrows())?;
        for (k, c) in &self.obs.columns {
            check(format!("obs['{k}']"), n, c.len())?;
        }
        for (k, c) in &self.var.columns {
            check(format!("var['{k}']"), g, c.len())?;
        }
        for (k, a) in &self.obsm {
            check(format!("obsm['{k}'] rows"), n, a.shape().0)?;
        }
        for (k, a) in &self.varm {
            check(format!("varm['{k}'] rows"), g, a.shape().0)?;
        }
        for (k, m) in &self.layers {
            let s = m.shape();
            check(format!("layers['{k}'] rows"), n, s.0)?;
            check(format!("layers['{k}'] columns"), g, s.1)?;
        }
        for (k, m) in &self.obsp {
            let s = m.shape();
            check(format!("obsp['{k}'] rows"), n, s.0)?;
            check(format!("obsp['{k}'] columns"), n, s.1)?;
        }
        if let Some(raw) = &self.raw {
            let s = raw.x.shape();
            check("raw.X rows".into(), n, s.0)?;
            check("raw.var rows".into(), s.1, raw.var.nrows())?;
        }
        Ok(())
    }

    /// An obs column, or an error naming the key and listing the columns that exist.
    pub fn obs_column(&self, key: &str) -> Result<&crate::Column> {
        self.obs.column(key, "obs column")
    }

    /// An obsm entry, or an error naming the key and listing the entries that exist.
    pub fn obsm_get(&self, key: &str) -> Result<&Array2> {
        self.obsm.get(key).ok_or_else(|| DataError::MissingKey {
            kind: "obsm entry",
            key: key.to_string(),
            hint: available_hint(self.obsm.keys().map(|k| k.as_str())),
        })
    }

    /// Keeps the cells listed in `rows`, in that order, in every part (`obsp` matrices keep
    /// those rows and those columns).
    pub fn select_obs(&self, rows: &[usize]) -> AnnData {
        AnnData {
            x: self.x.select_rows(rows),
            obs: self.obs.select_rows(rows),
            var: self.var.clone(),
            obsm: self.obsm.iter().map(|(k, a)| (k.clone(), a.select_rows(rows))).collect(),
            varm: self.varm.clone(),
            layers: self.layers.iter().map(|(k, m)| (k.clone(), m.select_rows(rows))).collect(),
            obsp: self.obsp.iter().map(|(k, m)| (k.clone(), m.select_rows(rows).select_cols(rows))).collect(),
            raw: self.raw.as_ref().map(|r| Raw { x: r.x.select_rows(rows), var: r.var.clone(), varm: r.varm.clone() }),
            uns: self.uns.clone(),
        }
    }

    /// Keeps the genes listed in `cols`, in that order, in `X`, `var`, `varm` and layers
    /// (`raw` is left whole, as anndata does).
    pub fn select_vars(&self, cols: &[usize]) -> AnnData {
        AnnData {
            x: self.x.select_cols(cols),
            obs: self.obs.clone(),
            var: self.var.select_rows(cols),
            obsm: self.obsm.clone(),
            varm: self.varm.iter().map(|(k, a)| (k.clone(), a.select_rows(cols))).collect(),
            layers: self.layers.iter().map(|(k, m)| (k.clone(), m.select_cols(cols))).collect(),
            obsp: self.obsp.clone(),
            raw: self.raw.clone(),
            uns: self.uns.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CsrMatrix, Dense};

    #[test]
    fn obsp_is_validated_and_subset_on_both_axes() {
        let mut a = AnnData::new(Matrix::Dense(Dense::zeros(3, 2)));
        let p = Dense::from_vec(3, 3, vec![0., 1., 2., 3., 0., 5., 6., 7., 0.]).unwrap();
        a.obsp.insert("g".into(), Matrix::Csr(CsrMatrix::from_dense(&p)));
        a.validate().unwrap();
        let s = a.select_obs(&[2, 0]);
        assert_eq!(s.obsp["g"].to_dense(), Dense::from_vec(2, 2, vec![0., 6., 2., 0.]).unwrap());
        assert_eq!(a.select_vars(&[1]).obsp, a.obsp);
        a.obsp.insert("bad".into(), Matrix::Dense(Dense::zeros(3, 2)));
        let e = a.validate().unwrap_err().to_string();
        assert!(e.contains("obsp['bad'] columns"), "{e}");
    }
}
