//! Plain tensors: a shape, the element type found in the file, and the values as `f32` or `i64`.

use std::collections::BTreeMap;

use crate::error::{Result, WeightsError};

/// A state dict: tensor name → tensor, sorted by name.
pub type StateDict = BTreeMap<String, TensorData>;

/// Element type of a tensor as stored in the file. Floating types are converted to `f32` on reading,
/// integer and boolean types to `i64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit float.
    F32,
    /// 64-bit float (rounded to `f32` on reading).
    F64,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
    /// 64-bit signed integer.
    I64,
    /// 32-bit signed integer.
    I32,
    /// 16-bit signed integer.
    I16,
    /// 8-bit signed integer.
    I8,
    /// 8-bit unsigned integer.
    U8,
    /// 16-bit unsigned integer (safetensors only).
    U16,
    /// 32-bit unsigned integer (safetensors only).
    U32,
    /// 64-bit unsigned integer (safetensors only; values above `i64::MAX` are rejected).
    U64,
    /// Boolean (read as 0 / 1).
    Bool,
}

impl DType {
    /// Size of one element in bytes.
    pub fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 | DType::U64 => 8,
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 | DType::I16 | DType::U16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Whether values of this type are held as `f32` (otherwise `i64`).
    pub fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }

    /// Short lower-case name (`f32`, `bf16`, `i64`, `bool`, ...).
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I64 => "i64",
            DType::I32 => "i32",
            DType::I16 => "i16",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::U16 => "u16",
            DType::U32 => "u32",
            DType::U64 => "u64",
            DType::Bool => "bool",
        }
    }
}

impl std::fmt::Display for DType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The values of a tensor in row-major (C) order.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorValues {
    /// Floating-point values.
    F32(Vec<f32>),
    /// Integer or boolean values.
    I64(Vec<i64>),
}

impl TensorValues {
    /// Number of values.
    pub fn len(&self) -> usize {
        match self {
            TensorValues::F32(v) => v.len(),
            TensorValues::I64(v) => v.len(),
        }
    }

    /// Whether there are no values.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One tensor: shape, element type in the file, values (row-major, contiguous).
#[derive(Debug, Clone, PartialEq)]
pub struct TensorData {
    /// Shape; empty for a scalar.
    pub shape: Vec<usize>,
    /// Element type as stored in the file.
    pub dtype: DType,
    /// The values; `F32` for floating dtypes, `I64` for integer and boolean dtypes.
    pub data: TensorValues,
}

impl TensorData {
    /// A float tensor; fails when the number of values does not match the shape.
    pub fn from_f32(shape: Vec<usize>, data: Vec<f32>) -> Result<Self> {
        check_len(&shape, data.len())?;
        Ok(TensorData { shape, dtype: DType::F32, data: TensorValues::F32(data) })
    }

    /// An integer tensor; fails when the number of values does not match the shape.
    pub fn from_i64(shape: Vec<usize>, data: Vec<i64>) -> Result<Self> {
        check_len(&shape, data.len())?;
        Ok(TensorData { shape, dtype: DType::I64, data: TensorValues::I64(data) })
    }

    /// Number of elements (product of the shape; 1 for a scalar).
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// The values when the tensor holds floats.
    pub fn as_f32(&self) -> Option<&[f32]> {
        match &self.data {
            TensorValues::F32(v) => Some(v),
            TensorValues::I64(_) => None,
        }
    }

    /// The values when the tensor holds integers.
    pub fn as_i64(&self) -> Option<&[i64]> {
        match &self.data {
            TensorValues::I64(v) => Some(v),
            TensorValues::F32(_) => None,
        }
    }

    /// The values as `f32` (integers are converted, possibly with rounding above 2^24).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            TensorValues::F32(v) => v.clone(),
            TensorValues::I64(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }

    /// Takes the float values out; fails (naming `key`) when the tensor holds integers.
    pub fn into_f32(self, key: &str) -> Result<Vec<f32>> {
        match self.data {
            TensorValues::F32(v) => Ok(v),
            TensorValues::I64(_) => Err(WeightsError::Data {
                key: key.to_string(),
                reason: format!("holds {} values, expected floating point", self.dtype),
            }),
        }
    }
}

fn check_len(shape: &[usize], len: usize) -> Result<()> {
    let n = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
    if n != Some(len) {
        return Err(WeightsError::Data {
            key: String::new(),
            reason: format!("shape {shape:?} does not hold {len} values"),
        });
    }
    Ok(())
}

/// Decodes `count` little- or big-endian elements of `dtype` from `bytes` into values.
/// `bytes` must hold at least `count * dtype.size()` bytes (checked by the caller).
pub(crate) fn decode_contiguous(
    dtype: DType,
    bytes: &[u8],
    big_endian: bool,
) -> std::result::Result<TensorValues, String> {
    let s = dtype.size();
    let n = bytes.len() / s;
    let chunks = bytes[..n * s].chunks_exact(s);
    macro_rules! arr {
        ($c:expr, $N:literal) => {{
            let mut a = [0u8; $N];
            a.copy_from_slice($c);
            if big_endian {
                a.reverse();
            }
            a
        }};
    }
    Ok(match dtype {
        DType::F32 => TensorValues::F32(chunks.map(|c| f32::from_le_bytes(arr!(c, 4))).collect()),
        DType::F64 => TensorValues::F32(chunks.map(|c| f64::from_le_bytes(arr!(c, 8)) as f32).collect()),
        DType::F16 => TensorValues::F32(chunks.map(|c| half::f16::from_le_bytes(arr!(c, 2)).to_f32()).collect()),
        DType::BF16 => TensorValues::F32(chunks.map(|c| half::bf16::from_le_bytes(arr!(c, 2)).to_f32()).collect()),
        DType::I64 => TensorValues::I64(chunks.map(|c| i64::from_le_bytes(arr!(c, 8))).collect()),
        DType::I32 => TensorValues::I64(chunks.map(|c| i32::from_le_bytes(arr!(c, 4)) as i64).collect()),
        DType::I16 => TensorValues::I64(chunks.map(|c| i16::from_le_bytes(arr!(c, 2)) as i64).collect()),
        DType::U16 => TensorValues::I64(chunks.map(|c| u16::from_le_bytes(arr!(c, 2)) as i64).collect()),
        DType::U32 => TensorValues::I64(chunks.map(|c| u32::from_le_bytes(arr!(c, 4)) as i64).collect()),
        DType::U64 => {
            let mut out = Vec::with_capacity(n);
            for c in chunks {
                let v = u64::from_le_bytes(arr!(c, 8));
                out.push(i64::try_from(v).map_err(|_| format!("u64 value {v} does not fit in i64"))?);
            }
            TensorValues::I64(out)
        }
        DType::I8 => TensorValues::I64(bytes[..n].iter().map(|&b| b as i8 as i64).collect()),
        DType::U8 => TensorValues::I64(bytes[..n].iter().map(|&b| b as i64).collect()),
        DType::Bool => TensorValues::I64(bytes[..n].iter().map(|&b| (b != 0) as i64).collect()),
    })
}
