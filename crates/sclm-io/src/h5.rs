//! Thin helpers over the HDF5 backend that attach the file name and key to every error.
//! Nothing of the backend leaks into the public API.

use std::collections::HashMap;
use std::path::Path;

use hdf5_pure::{AttrValue, DType, Dataset, Datatype, DatatypeByteOrder, File, Group};

use crate::error::{fmt_err, io_err, IoError, Result};

/// An open HDF5 file and its display name.
pub(crate) struct H5 {
    pub f: File,
    pub name: String,
}

/// A node of the HDF5 tree.
pub(crate) enum Node {
    Group(Group),
    Dataset(Dataset),
}

/// Element values of a 1-D dataset or compound field, in the closest native type.
#[derive(Debug, Clone)]
pub(crate) enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    /// Integers of at most 32 bits.
    I32(Vec<i32>),
    I64(Vec<i64>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

impl H5 {
    /// Opens `path` for reading; refuses empty and non-HDF5 files with a clear message.
    pub fn open(path: &Path) -> Result<H5> {
        let name = crate::error::fname(path);
        let meta = std::fs::metadata(path).map_err(|e| io_err(&name, e))?;
        if meta.is_dir() {
            return Err(IoError::NotReadable { file: name, msg: "is a directory, not an HDF5 file".into() });
        }
        if meta.len() == 0 {
            return Err(IoError::NotReadable { file: name, msg: "empty file".into() });
        }
        if !hdf5_pure::is_hdf5(path).map_err(|e| io_err(&name, e))? {
            return Err(IoError::NotReadable { file: name, msg: "not an HDF5 file (no HDF5 signature)".into() });
        }
        let n2 = name.clone();
        let f = crate::error::guard(&name, || {
            File::open_streaming(path).map_err(|e| IoError::NotReadable {
                file: n2.clone(),
                msg: format!("cannot open as HDF5 (corrupt or truncated?): {e}"),
            })
        })?;
        Ok(H5 { f, name })
    }

    pub fn err(&self, key: &str, msg: impl std::fmt::Display) -> IoError {
        fmt_err(&self.name, key, msg)
    }

    /// The group or dataset at `path`, if any.
    pub fn node(&self, path: &str) -> Option<Node> {
        if path.is_empty() || path == "/" {
            return Some(Node::Group(self.f.root()));
        }
        let (parent, leaf) = match path.rfind('/') {
            Some(i) => (&path[..i], &path[i + 1..]),
            None => ("", path),
        };
        let pg = if parent.is_empty() { self.f.root() } else { self.f.group(parent).ok()? };
        if pg.groups().ok()?.iter().any(|g| g == leaf) {
            return self.f.group(path).ok().map(Node::Group);
        }
        if pg.datasets().ok()?.iter().any(|d| d == leaf) {
            return self.f.dataset(path).ok().map(Node::Dataset);
        }
        None
    }

    pub fn has(&self, path: &str) -> bool {
        self.node(path).is_some()
    }

    pub fn group(&self, path: &str) -> Result<Group> {
        if path.is_empty() {
            return Ok(self.f.root());
        }
        self.f.group(path).map_err(|e| self.err(path, format!("not a readable group: {e}")))
    }

    pub fn dataset(&self, path: &str) -> Result<Dataset> {
        self.f.dataset(path).map_err(|e| self.err(path, format!("not a readable dataset: {e}")))
    }

    /// (sub-groups, datasets) of the group at `path`.
    pub fn children(&self, path: &str) -> Result<(Vec<String>, Vec<String>)> {
        let g = self.group(path)?;
        let gs = g.groups().map_err(|e| self.err(path, e))?;
        let ds = g.datasets().map_err(|e| self.err(path, e))?;
        Ok((gs, ds))
    }

    pub fn attrs(&self, path: &str) -> Result<HashMap<String, AttrValue>> {
        match self.node(path) {
            Some(Node::Group(g)) => g.attrs().map_err(|e| self.err(path, format!("cannot read attributes: {e}"))),
            Some(Node::Dataset(d)) => d.attrs().map_err(|e| self.err(path, format!("cannot read attributes: {e}"))),
            None => Err(self.err(path, "missing")),
        }
    }

    pub fn shape(&self, path: &str, d: &Dataset) -> Result<Vec<usize>> {
        Ok(d.shape().map_err(|e| self.err(path, e))?.into_iter().map(|x| x as usize).collect())
    }

    /// Reads a whole dataset as `f32` (any numeric type is converted).
    pub fn read_f32(&self, path: &str) -> Result<Vec<f32>> {
        let d = self.dataset(path)?;
        check_numeric(self, path, &d)?;
        d.read_f32().map_err(|e| self.err(path, format!("cannot read: {e}")))
    }

    /// Reads a whole integer dataset as `i64`.
    pub fn read_i64(&self, path: &str) -> Result<Vec<i64>> {
        let d = self.dataset(path)?;
        check_numeric(self, path, &d)?;
        d.read_i64().map_err(|e| self.err(path, format!("cannot read: {e}")))
    }

    /// Reads column indices as `u32`, without widening 32-bit storage to 64 bits first.
    /// `rows` restricts the read to elements `[start, start + count)`.
    pub fn read_indices(&self, path: &str, rows: Option<(u64, u64)>) -> Result<Vec<u32>> {
        let d = self.dataset(path)?;
        self.read_indices_of(path, &d, rows)
    }

    /// [`read_indices`](Self::read_indices) on an open dataset.
    pub fn read_indices_of(&self, path: &str, d: &Dataset, rows: Option<(u64, u64)>) -> Result<Vec<u32>> {
        check_numeric(self, path, d)?;
        let e = |e: hdf5_pure::Error| self.err(path, format!("cannot read: {e}"));
        let bad = |x: i64| self.err(path, format!("index {x} out of range"));
        match d.dtype().map_err(|x| self.err(path, x))? {
            DType::I8 | DType::I16 | DType::I32 | DType::U8 | DType::U16 => {
                let v = match rows {
                    Some((s, n)) => d.read_i32_rows(s, n).map_err(e)?,
                    None => d.read_i32().map_err(e)?,
                };
                if let Some(&x) = v.iter().find(|&&x| x < 0) {
                    return Err(bad(x as i64));
                }
                Ok(v.into_iter().map(|x| x as u32).collect())
            }
            DType::U32 => match rows {
                Some((s, n)) => d.read_u32_rows(s, n).map_err(e),
                None => d.read_u32().map_err(e),
            },
            _ => {
                let v = match rows {
                    Some((s, n)) => d.read_i64_rows(s, n).map_err(e)?,
                    None => d.read_i64().map_err(e)?,
                };
                v.into_iter().map(|x| u32::try_from(x).map_err(|_| bad(x))).collect()
            }
        }
    }

    /// Reads a string dataset (fixed or variable length).
    pub fn read_strings(&self, path: &str) -> Result<Vec<String>> {
        let d = self.dataset(path)?;
        d.read_string().map_err(|e| self.err(path, format!("cannot read as strings: {e}")))
    }

    /// Reads a 1-D (or scalar) dataset in its natural type.
    pub fn read_values(&self, path: &str) -> Result<Values> {
        let d = self.dataset(path)?;
        let dt = d.dtype().map_err(|e| self.err(path, e))?;
        let e = |e: hdf5_pure::Error| self.err(path, format!("cannot read: {e}"));
        Ok(match dt {
            DType::F32 => Values::F32(d.read_f32().map_err(e)?),
            DType::F64 => Values::F64(d.read_f64().map_err(e)?),
            DType::I8 | DType::I16 | DType::I32 | DType::U8 | DType::U16 => Values::I32(d.read_i32().map_err(e)?),
            DType::I64 | DType::U32 => Values::I64(d.read_i64().map_err(e)?),
            DType::U64 => Values::I64(
                d.read_u64().map_err(e)?.into_iter().map(|v| i64::try_from(v).unwrap_or(i64::MAX)).collect(),
            ),
            DType::String | DType::VariableLengthString => Values::Str(d.read_string().map_err(e)?),
            DType::Enum(names) if is_bool_enum(&names) => {
                Values::Bool(d.read_raw().map_err(e)?.iter().map(|&b| b != 0).collect())
            }
            other => return Err(self.err(path, format!("unsupported element type {other}"))),
        })
    }
}

fn check_numeric(h: &H5, path: &str, d: &Dataset) -> Result<()> {
    match d.dtype().map_err(|e| h.err(path, e))? {
        DType::F32
        | DType::F64
        | DType::I8
        | DType::I16
        | DType::I32
        | DType::I64
        | DType::U8
        | DType::U16
        | DType::U32
        | DType::U64 => Ok(()),
        other => Err(h.err(path, format!("expected numbers, found {other}"))),
    }
}

pub(crate) fn is_bool_enum(names: &[String]) -> bool {
    names.len() == 2 && names.iter().any(|n| n == "FALSE") && names.iter().any(|n| n == "TRUE")
}

/// A string attribute.
pub(crate) fn attr_str(a: &HashMap<String, AttrValue>, k: &str) -> Option<String> {
    let v = a.get(k)?;
    if let Some(s) = v.as_str() {
        return Some(s.to_string());
    }
    match v.as_strings() {
        Some([s]) => Some(s.clone()),
        _ => None,
    }
}

/// A string-array attribute (an empty numeric array counts as an empty list, as anndata writes it).
pub(crate) fn attr_strings(a: &HashMap<String, AttrValue>, k: &str) -> Option<Vec<String>> {
    let v = a.get(k)?;
    if let Some(s) = v.as_strings() {
        return Some(s.to_vec());
    }
    if let Some(s) = v.as_str() {
        return Some(vec![s.to_string()]);
    }
    match v.to_f64s() {
        Some(x) if x.is_empty() => Some(vec![]),
        _ => None,
    }
}

/// A boolean-ish attribute (bool enums arrive as small integers).
pub(crate) fn attr_bool(a: &HashMap<String, AttrValue>, k: &str) -> Option<bool> {
    let v = a.get(k)?;
    v.as_i64().map(|x| x != 0).or_else(|| v.as_u64().map(|x| x != 0)).or_else(|| v.as_f64().map(|x| x != 0.0))
}

/// The anndata `encoding-type` of a node.
pub(crate) fn encoding(a: &HashMap<String, AttrValue>) -> Option<String> {
    attr_str(a, "encoding-type")
}

/// Decodes one field of a compound dataset's raw records.
pub(crate) fn compound_field(raw: &[u8], rec: usize, off: usize, dt: &Datatype) -> Option<(Values, usize)> {
    let n = raw.len().checked_div(rec).unwrap_or(0);
    let at = |i: usize, k: usize| &raw[i * rec + off + k..];
    match dt {
        Datatype::Array { base_type, dimensions } => {
            let width: usize = dimensions.iter().map(|&d| d as usize).product();
            let esz = base_type.type_size() as usize;
            let mut out = Vec::with_capacity(n * width);
            for i in 0..n {
                for k in 0..width {
                    out.push(scalar_f64(at(i, k * esz), base_type)?);
                }
            }
            Some((Values::F64(out), width))
        }
        Datatype::String { size, .. } => {
            let s = *size as usize;
            let v = (0..n)
                .map(|i| {
                    let b = &at(i, 0)[..s];
                    let end = b.iter().position(|&c| c == 0).unwrap_or(s);
                    String::from_utf8_lossy(&b[..end]).into_owned()
                })
                .collect();
            Some((Values::Str(v), 1))
        }
        Datatype::Enumeration { members, .. } => {
            let names: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
            if !is_bool_enum(&names) {
                return None;
            }
            Some((Values::Bool((0..n).map(|i| at(i, 0)[0] != 0).collect()), 1))
        }
        Datatype::FloatingPoint { size: 4, .. } => {
            Some((Values::F32((0..n).map(|i| scalar_f64(at(i, 0), dt).unwrap_or(f64::NAN) as f32).collect()), 1))
        }
        Datatype::FloatingPoint { .. } => {
            Some((Values::F64((0..n).map(|i| scalar_f64(at(i, 0), dt)).collect::<Option<_>>()?), 1))
        }
        Datatype::FixedPoint { size, .. } => {
            let v: Vec<i64> = (0..n).map(|i| scalar_i64(at(i, 0), dt)).collect::<Option<_>>()?;
            if *size <= 4 {
                Some((Values::I32(v.into_iter().map(|x| x as i32).collect()), 1))
            } else {
                Some((Values::I64(v), 1))
            }
        }
        _ => None,
    }
}

fn le_bytes<const N: usize>(b: &[u8], order: &DatatypeByteOrder) -> Option<[u8; N]> {
    let mut a: [u8; N] = b.get(..N)?.try_into().ok()?;
    match order {
        DatatypeByteOrder::LittleEndian => {}
        DatatypeByteOrder::BigEndian => a.reverse(),
        _ => return None,
    }
    Some(a)
}

fn scalar_i64(b: &[u8], dt: &Datatype) -> Option<i64> {
    if let Datatype::FixedPoint { size, byte_order, layout } = dt {
        let s = layout.signed;
        Some(match size {
            1 => {
                let x = le_bytes::<1>(b, byte_order)?;
                if s {
                    x[0] as i8 as i64
                } else {
                    x[0] as i64
                }
            }
            2 => {
                let x = le_bytes::<2>(b, byte_order)?;
                if s {
                    i16::from_le_bytes(x) as i64
                } else {
                    u16::from_le_bytes(x) as i64
                }
            }
            4 => {
                let x = le_bytes::<4>(b, byte_order)?;
                if s {
                    i32::from_le_bytes(x) as i64
                } else {
                    u32::from_le_bytes(x) as i64
                }
            }
            8 => i64::from_le_bytes(le_bytes::<8>(b, byte_order)?),
            _ => return None,
        })
    } else {
        None
    }
}

fn scalar_f64(b: &[u8], dt: &Datatype) -> Option<f64> {
    match dt {
        Datatype::FloatingPoint { size: 4, byte_order, .. } => {
            Some(f32::from_le_bytes(le_bytes::<4>(b, byte_order)?) as f64)
        }
        Datatype::FloatingPoint { size: 8, byte_order, .. } => Some(f64::from_le_bytes(le_bytes::<8>(b, byte_order)?)),
        Datatype::FixedPoint { .. } => scalar_i64(b, dt).map(|x| x as f64),
        _ => None,
    }
}
