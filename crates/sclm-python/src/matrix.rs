//! Count matrices handed over by Python, borrowed without a copy.
//!
//! The Python side passes `("csr" | "csc", (n_obs, n_vars), indptr, indices, data)` for a SciPy
//! sparse matrix or `("dense", (n_obs, n_vars), array)` for a NumPy array. Each buffer is
//! borrowed read-only as it is (int32/int64 indices, float32/float64/int32/int64 values, any
//! strides for dense arrays); a dtype outside those is a `TypeError`, never a silent copy. The
//! model layer then reads the rows of one forward call at a time ([`sclm_data::RowSource`]).
use numpy::{PyArrayMethods, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use sclm_data::{CscView, CsrView, DenseView, RowSource};

/// One borrowed 1-D buffer.
pub enum Buf<'py> {
    I32(PyReadonlyArray1<'py, i32>),
    I64(PyReadonlyArray1<'py, i64>),
    F32(PyReadonlyArray1<'py, f32>),
    F64(PyReadonlyArray1<'py, f64>),
}

/// One borrowed 2-D array.
pub enum Buf2<'py> {
    I32(PyReadonlyArray2<'py, i32>),
    I64(PyReadonlyArray2<'py, i64>),
    F32(PyReadonlyArray2<'py, f32>),
    F64(PyReadonlyArray2<'py, f64>),
}

fn dtype_name(obj: &Bound<'_, PyAny>) -> String {
    obj.getattr("dtype").and_then(|d| d.str()).map(|s| s.to_string()).unwrap_or_else(|_| "unknown".into())
}

impl<'py> Buf<'py> {
    fn extract(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Self> {
        if let Ok(a) = obj.extract::<PyReadonlyArray1<'py, f32>>() {
            return Ok(Buf::F32(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArray1<'py, f64>>() {
            return Ok(Buf::F64(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArray1<'py, i32>>() {
            return Ok(Buf::I32(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArray1<'py, i64>>() {
            return Ok(Buf::I64(a));
        }
        Err(PyTypeError::new_err(format!(
            "{what}: dtype {} is not supported (use float32, float64, int32 or int64)",
            dtype_name(obj)
        )))
    }

    fn address(&self) -> PyResult<usize> {
        Ok(match self {
            Buf::I32(a) => a.as_slice()?.as_ptr() as usize,
            Buf::I64(a) => a.as_slice()?.as_ptr() as usize,
            Buf::F32(a) => a.as_slice()?.as_ptr() as usize,
            Buf::F64(a) => a.as_slice()?.as_ptr() as usize,
        })
    }
}

impl<'py> Buf2<'py> {
    fn extract(obj: &Bound<'py, PyAny>, what: &str) -> PyResult<Self> {
        if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, f32>>() {
            return Ok(Buf2::F32(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, f64>>() {
            return Ok(Buf2::F64(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, i32>>() {
            return Ok(Buf2::I32(a));
        }
        if let Ok(a) = obj.extract::<PyReadonlyArray2<'py, i64>>() {
            return Ok(Buf2::I64(a));
        }
        Err(PyTypeError::new_err(format!(
            "{what}: dtype {} is not supported (use float32, float64, int32 or int64)",
            dtype_name(obj)
        )))
    }
}

/// A count matrix borrowed from Python.
pub enum MatrixArg<'py> {
    Compressed { csc: bool, shape: (usize, usize), indptr: Buf<'py>, indices: Buf<'py>, data: Buf<'py> },
    Dense { shape: (usize, usize), array: Buf2<'py> },
}

impl<'py> MatrixArg<'py> {
    /// Reads the tuple the Python package builds (see the module docs).
    pub fn extract(obj: &Bound<'py, PyAny>) -> PyResult<Self> {
        let kind: String = obj.get_item(0)?.extract()?;
        let shape: (usize, usize) = obj.get_item(1)?.extract()?;
        match kind.as_str() {
            "csr" | "csc" => Ok(MatrixArg::Compressed {
                csc: kind == "csc",
                shape,
                indptr: Buf::extract(&obj.get_item(2)?, "indptr")?,
                indices: Buf::extract(&obj.get_item(3)?, "indices")?,
                data: Buf::extract(&obj.get_item(4)?, "data")?,
            }),
            "dense" => {
                let array = Buf2::extract(&obj.get_item(2)?, "X")?;
                Ok(MatrixArg::Dense { shape, array })
            }
            other => Err(PyValueError::new_err(format!("unknown matrix layout '{other}' (csr, csc, dense)"))),
        }
    }

    /// The addresses of the buffers the row source reads (to check that nothing was copied).
    pub fn addresses(&self) -> PyResult<Vec<usize>> {
        match self {
            MatrixArg::Compressed { indptr, indices, data, .. } => {
                Ok(vec![indptr.address()?, indices.address()?, data.address()?])
            }
            MatrixArg::Dense { array, .. } => Ok(vec![match array {
                Buf2::I32(a) => a.data() as usize,
                Buf2::I64(a) => a.data() as usize,
                Buf2::F32(a) => a.data() as usize,
                Buf2::F64(a) => a.data() as usize,
            }]),
        }
    }

    /// The row source over the borrowed buffers.
    pub fn source(&self) -> PyResult<Box<dyn RowSource + '_>> {
        match self {
            MatrixArg::Compressed { csc, shape, indptr, indices, data } => {
                compressed(*csc, *shape, indptr, indices, data)
            }
            MatrixArg::Dense { shape, array } => match array {
                Buf2::I32(a) => dense(*shape, a),
                Buf2::I64(a) => dense(*shape, a),
                Buf2::F32(a) => dense(*shape, a),
                Buf2::F64(a) => dense(*shape, a),
            },
        }
    }
}

fn data_err(e: sclm_data::DataError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn dense<'a, V>(shape: (usize, usize), a: &'a PyReadonlyArray2<'_, V>) -> PyResult<Box<dyn RowSource + 'a>>
where
    V: numpy::Element + sclm_data::Scalar + PartialEq + Default + 'a,
{
    let (n, g) = shape;
    if a.shape() != [n, g] {
        return Err(PyValueError::new_err(format!("X has shape {:?}, expected ({n}, {g})", a.shape())));
    }
    let item = std::mem::size_of::<V>() as isize;
    let st = a.strides();
    if st.iter().any(|&s| s < 0 || s % item != 0) {
        return Err(PyValueError::new_err("X has negative or unaligned strides; pass a regular array"));
    }
    let (rs, cs) = ((st[0] / item) as usize, (st[1] / item) as usize);
    // The whole extent the strides reach, from the first element.
    let len = if n == 0 || g == 0 { 0 } else { (n - 1) * rs + (g - 1) * cs + 1 };
    // SAFETY: numpy guarantees that every element (r, c), at offset r·rs + c·cs elements from
    // `data()`, lies inside the array's allocation; the largest such offset is `len - 1`. The
    // read-only borrow `a` keeps the buffer alive and unchanged from Rust for 'a.
    let data: &'a [V] = if len == 0 { &[] } else { unsafe { std::slice::from_raw_parts(a.data(), len) } };
    Ok(Box::new(DenseView::new(n, g, data, rs, cs).map_err(data_err)?))
}

fn compressed<'a>(
    csc: bool,
    (n, g): (usize, usize),
    p: &'a Buf<'_>,
    i: &'a Buf<'_>,
    d: &'a Buf<'_>,
) -> PyResult<Box<dyn RowSource + 'a>> {
    fn values<'a, P: sclm_data::Index + numpy::Element, I: sclm_data::Index + numpy::Element>(
        csc: bool,
        (n, g): (usize, usize),
        p: &'a [P],
        i: &'a [I],
        d: &'a Buf<'_>,
    ) -> PyResult<Box<dyn RowSource + 'a>> {
        macro_rules! view {
            ($a:expr) => {{
                let v = $a.as_slice()?;
                if csc {
                    Box::new(CscView::new(n, g, p, i, v).map_err(data_err)?) as Box<dyn RowSource + 'a>
                } else {
                    Box::new(CsrView::new(n, g, p, i, v).map_err(data_err)?)
                }
            }};
        }
        Ok(match d {
            Buf::F32(a) => view!(a),
            Buf::F64(a) => view!(a),
            Buf::I32(a) => view!(a),
            Buf::I64(a) => view!(a),
        })
    }
    let int = |what: &str| PyTypeError::new_err(format!("{what} must be int32 or int64"));
    match (p, i) {
        (Buf::I32(p), Buf::I32(i)) => values(csc, (n, g), p.as_slice()?, i.as_slice()?, d),
        (Buf::I32(p), Buf::I64(i)) => values(csc, (n, g), p.as_slice()?, i.as_slice()?, d),
        (Buf::I64(p), Buf::I32(i)) => values(csc, (n, g), p.as_slice()?, i.as_slice()?, d),
        (Buf::I64(p), Buf::I64(i)) => values(csc, (n, g), p.as_slice()?, i.as_slice()?, d),
        (Buf::I32(_) | Buf::I64(_), _) => Err(int("indices")),
        _ => Err(int("indptr")),
    }
}
