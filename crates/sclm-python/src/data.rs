//! An owned AnnData for the task protocols, built from the parts the Python package sends, and
//! the AnnData parts of a protocol's result sent back.
//!
//! The protocols train for many epochs over their data, so they read an owned copy of the
//! counts (built here from the borrowed buffers, once); embedding and prediction never copy
//! (see `matrix.rs`).
use numpy::{IntoPyArray, PyReadonlyArray1, PyReadonlyArray2};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use sclm_data::{AnnData, Array2, Column, CsrMatrix, DataFrame, Dense, Matrix};

use crate::matrix::MatrixArg;

fn val_err(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn owned(x: &Bound<'_, PyAny>) -> PyResult<CsrMatrix> {
    let m = MatrixArg::extract(x)?;
    let src = m.source()?;
    let rows: Vec<usize> = (0..src.nrows()).collect();
    src.gather(&rows).map_err(val_err)
}

fn column(v: &Bound<'_, PyAny>, name: &str) -> PyResult<Column> {
    if let Ok(a) = v.extract::<PyReadonlyArray1<'_, f64>>() {
        return Ok(Column::F64(a.as_array().to_vec()));
    }
    if let Ok(s) = v.extract::<Vec<String>>() {
        return Ok(Column::categorical_from_labels(&s));
    }
    Err(PyValueError::new_err(format!("obs/var column '{name}': pass float64 values or strings")))
}

fn frame(index: Vec<String>, cols: Option<Bound<'_, PyAny>>) -> PyResult<DataFrame> {
    let mut f = DataFrame::new(index);
    if let Some(c) = cols {
        let d = c.cast::<PyDict>()?;
        for (k, v) in d.iter() {
            let k: String = k.extract()?;
            let col = column(&v, &k)?;
            f.insert(k, col).map_err(val_err)?;
        }
    }
    Ok(f)
}

/// The AnnData described by `parts` (`x`, `obs_names`, `var_names`, and optional `obs`, `var`,
/// `obsm`, `layers` dictionaries).
pub(crate) fn anndata_from(parts: &Bound<'_, PyDict>) -> PyResult<AnnData> {
    let get = |k: &str| parts.get_item(k);
    let x = owned(&get("x")?.ok_or_else(|| PyValueError::new_err("parts without 'x'"))?)?;
    let obs_names: Vec<String> = get("obs_names")?.map(|v| v.extract()).transpose()?.unwrap_or_default();
    let var_names: Vec<String> = get("var_names")?.map(|v| v.extract()).transpose()?.unwrap_or_default();
    let mut a = AnnData::new(Matrix::Csr(x));
    a.obs = frame(obs_names, get("obs")?)?;
    a.var = frame(var_names, get("var")?)?;
    if let Some(m) = get("obsm")? {
        for (k, v) in m.cast::<PyDict>()?.iter() {
            let k: String = k.extract()?;
            let arr: PyReadonlyArray2<'_, f64> = v.extract()?;
            let a2 = arr.as_array();
            let d = Dense::from_vec(a2.nrows(), a2.ncols(), a2.iter().copied().collect()).map_err(val_err)?;
            a.obsm.insert(k, Array2::F64(d));
        }
    }
    if let Some(l) = get("layers")? {
        for (k, v) in l.cast::<PyDict>()?.iter() {
            let k: String = k.extract()?;
            a.layers.insert(k, Matrix::Csr(owned(&v)?));
        }
    }
    a.validate().map_err(val_err)?;
    Ok(a)
}

fn matrix_out<'py>(py: Python<'py>, m: &Matrix) -> PyResult<Bound<'py, PyAny>> {
    let c = match m {
        Matrix::Csr(c) => std::borrow::Cow::Borrowed(c),
        Matrix::Dense(_) => std::borrow::Cow::Owned(m.to_csr()),
    };
    let indptr: Vec<i64> = c.indptr.iter().map(|&p| p as i64).collect();
    let indices: Vec<i32> = c.indices.iter().map(|&i| i as i32).collect();
    let t = PyTuple::new(
        py,
        [
            "csr".into_pyobject(py)?.into_any(),
            (c.nrows, c.ncols).into_pyobject(py)?.into_any(),
            indptr.into_pyarray(py).into_any(),
            indices.into_pyarray(py).into_any(),
            c.data.clone().into_pyarray(py).into_any(),
        ],
    )?;
    Ok(t.into_any())
}

/// `adata` as parts: `x` and `layers` as CSR tuples, `obs_names`, `var_names`, and string
/// obs columns.
pub(crate) fn anndata_to<'py>(py: Python<'py>, a: &AnnData) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("x", matrix_out(py, &a.x)?)?;
    let layers = PyDict::new(py);
    for (k, m) in &a.layers {
        layers.set_item(k, matrix_out(py, m)?)?;
    }
    d.set_item("layers", layers)?;
    d.set_item("obs_names", PyList::new(py, a.obs.index.iter())?)?;
    d.set_item("var_names", PyList::new(py, a.var.index.iter())?)?;
    let obs = PyDict::new(py);
    for name in a.obs.names() {
        if let Some(c) = a.obs.get(name) {
            obs.set_item(name, c.to_labels())?;
        }
    }
    d.set_item("obs", obs)?;
    Ok(d)
}
