//! safetensors files: read into a [`StateDict`], write a [`StateDict`].

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, View};

use crate::error::{Result, WeightsError};
use crate::tensor::{decode_contiguous, DType, StateDict, TensorData, TensorValues};

fn format_err(path: &Path, reason: impl Into<String>) -> WeightsError {
    WeightsError::Format { path: path.to_path_buf(), reason: reason.into() }
}

fn map_dtype(d: Dtype) -> Option<DType> {
    Some(match d {
        Dtype::F32 => DType::F32,
        Dtype::F64 => DType::F64,
        Dtype::F16 => DType::F16,
        Dtype::BF16 => DType::BF16,
        Dtype::I64 => DType::I64,
        Dtype::I32 => DType::I32,
        Dtype::I16 => DType::I16,
        Dtype::I8 => DType::I8,
        Dtype::U8 => DType::U8,
        Dtype::U16 => DType::U16,
        Dtype::U32 => DType::U32,
        Dtype::U64 => DType::U64,
        Dtype::BOOL => DType::Bool,
        _ => return None,
    })
}

/// Reads every tensor of a safetensors file. Floating dtypes become `f32`, integer and boolean dtypes `i64`.
pub fn read_safetensors(path: impl AsRef<Path>) -> Result<StateDict> {
    Ok(read_safetensors_with_metadata(path)?.0)
}

/// Reads every tensor of a safetensors file and the free-form `__metadata__` string map (empty if none).
pub fn read_safetensors_with_metadata(path: impl AsRef<Path>) -> Result<(StateDict, HashMap<String, String>)> {
    let path = path.as_ref();
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io { path: path.to_path_buf(), source })?;
    let st =
        SafeTensors::deserialize(&bytes).map_err(|e| format_err(path, format!("not a valid safetensors file: {e}")))?;
    let (_, meta) =
        SafeTensors::read_metadata(&bytes).map_err(|e| format_err(path, format!("safetensors header: {e}")))?;
    let metadata = meta.metadata().clone().unwrap_or_default();
    let mut out = StateDict::new();
    for (name, view) in st.tensors() {
        let terr = |reason: String| WeightsError::Tensor { path: path.to_path_buf(), key: name.clone(), reason };
        let dtype = map_dtype(view.dtype()).ok_or_else(|| terr(format!("unsupported dtype {:?}", view.dtype())))?;
        let shape = view.shape().to_vec();
        let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).ok_or_else(|| terr("size overflows".into()))?;
        if view.data().len() != n * dtype.size() {
            return Err(terr(format!("{} bytes for shape {shape:?} of {dtype}", view.data().len())));
        }
        let data = decode_contiguous(dtype, view.data(), false).map_err(terr)?;
        out.insert(name, TensorData { shape, dtype, data });
    }
    Ok((out, metadata))
}

struct Bytes<'a> {
    dtype: Dtype,
    shape: &'a [usize],
    data: Vec<u8>,
}

impl View for Bytes<'_> {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Writes a state dict as safetensors: float tensors as F32, integer tensors as I64 (the dtype the values
/// were read from is not restored). `metadata` becomes the `__metadata__` map.
pub fn write_safetensors(
    path: impl AsRef<Path>,
    tensors: &StateDict,
    metadata: Option<HashMap<String, String>>,
) -> Result<()> {
    let path = path.as_ref();
    let mut views = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        if t.numel() != t.data.len() {
            return Err(WeightsError::Data {
                key: name.clone(),
                reason: format!("shape {:?} does not hold {} values", t.shape, t.data.len()),
            });
        }
        let (dtype, data) = match &t.data {
            TensorValues::F32(v) => (Dtype::F32, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
            TensorValues::I64(v) => (Dtype::I64, v.iter().flat_map(|x| x.to_le_bytes()).collect()),
        };
        views.push((name.as_str(), Bytes { dtype, shape: &t.shape, data }));
    }
    let bytes = safetensors::tensor::serialize(views, metadata)
        .map_err(|e| format_err(path, format!("cannot serialise: {e}")))?;
    // Write to a temporary name first so that a failure never leaves a half-written file.
    let tmp = path.with_extension("safetensors.partial");
    std::fs::write(&tmp, &bytes).map_err(|source| WeightsError::Io { path: tmp.clone(), source })?;
    std::fs::rename(&tmp, path).map_err(|source| WeightsError::Io { path: path.to_path_buf(), source })
}
