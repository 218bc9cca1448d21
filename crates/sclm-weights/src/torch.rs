//! PyTorch checkpoints written by `torch.save`: the zip format (default since PyTorch 1.6) and the older
//! "legacy" single-stream format (`_use_new_zipfile_serialization=False`).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{Result, WeightsError};
use crate::pickle::{self, PyValue, StorageRef, TensorRef};
use crate::tensor::{decode_contiguous, DType, StateDict, TensorData, TensorValues};
use crate::zipfile::ZipArchive;

/// Magic number at the start of a legacy checkpoint.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

enum Source {
    Zip { archive: ZipArchive, prefix: String },
    Legacy { storages: HashMap<String, (usize, usize)>, bytes: Vec<u8> },
}

/// An opened PyTorch checkpoint: the unpickled object tree (tensors still unread) and access to the
/// storages. Use [`TorchCheckpoint::state_dict`] to materialise the tensors of one dictionary.
pub struct TorchCheckpoint {
    path: PathBuf,
    root: PyValue,
    source: Source,
    big_endian: bool,
}

impl std::fmt::Debug for TorchCheckpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchCheckpoint").field("path", &self.path).finish_non_exhaustive()
    }
}

/// Reads the tensors of the dictionary at `key_path` in a PyTorch checkpoint.
///
/// `key_path` selects a nested dictionary by string keys separated by `/`, e.g. `"model_state_dict"`;
/// `""` takes the top-level object (a bare `torch.save(model.state_dict())`). Nested dictionaries below it
/// are flattened with `.`-joined keys; non-tensor entries are left out. Floating tensors become `f32`,
/// integer and boolean tensors `i64`; strided views are gathered into contiguous row-major data.
pub fn read_torch(path: impl AsRef<Path>, key_path: &str) -> Result<StateDict> {
    TorchCheckpoint::open(path)?.state_dict(key_path)
}

fn format_err(path: &Path, reason: impl Into<String>) -> WeightsError {
    WeightsError::Format { path: path.to_path_buf(), reason: reason.into() }
}

fn pickle_err(path: &Path, e: pickle::PickleError) -> WeightsError {
    WeightsError::Pickle { path: path.to_path_buf(), offset: e.offset, reason: e.reason }
}

fn storage_dtype(v: &PyValue) -> std::result::Result<DType, String> {
    let name = match v {
        PyValue::Global { name, .. } => name.as_str(),
        other => return Err(format!("storage type is {} not a class", other.kind())),
    };
    Ok(match name {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "CharStorage" => DType::I8,
        "ByteStorage" | "UntypedStorage" => DType::U8,
        "BoolStorage" => DType::Bool,
        other => return Err(format!("unsupported storage type {other}")),
    })
}

/// `persistent_load` for storages: `('storage', type, key, location, numel, [view])`.
fn load_storage(pid: &PyValue) -> std::result::Result<PyValue, String> {
    let items = match pid {
        PyValue::Tuple(t) => t,
        other => return Err(format!("persistent id is {} not a tuple", other.kind())),
    };
    if items.len() < 5 || items[0] != PyValue::Str("storage".into()) {
        return Err("persistent id is not a storage reference".into());
    }
    let dtype = storage_dtype(&items[1])?;
    let key = match &items[2] {
        PyValue::Str(s) => s.clone(),
        other => return Err(format!("storage key is {} not a string", other.kind())),
    };
    let numel = match &items[4] {
        PyValue::Int(n) if *n >= 0 => *n as usize,
        other => return Err(format!("storage size is {} not a non-negative int", other.kind())),
    };
    if items.len() > 5 && items[5] != PyValue::None {
        return Err("storage views (pre-1.0 checkpoints) are not supported".into());
    }
    Ok(PyValue::Storage(StorageRef { key, dtype, numel }))
}

impl TorchCheckpoint {
    /// Opens a checkpoint and unpickles its object tree; tensor data is read later, on demand.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let io = |source| WeightsError::Io { path: path.to_path_buf(), source };
        let mut file = File::open(path).map_err(io)?;
        let mut head = [0u8; 4];
        let n = read_up_to(&mut file, &mut head).map_err(io)?;
        let head = &head[..n];
        if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") {
            Self::open_zip(path, File::open(path).map_err(io)?)
        } else if head.first() == Some(&0x80) {
            let mut bytes = Vec::new();
            File::open(path).map_err(io)?.read_to_end(&mut bytes).map_err(io)?;
            Self::open_legacy(path, bytes)
        } else {
            Err(format_err(
                path,
                "not a PyTorch checkpoint (neither a torch.save zip archive nor a legacy pickle stream)",
            ))
        }
    }

    fn open_zip(path: &Path, file: File) -> Result<Self> {
        let mut archive = ZipArchive::open(file).map_err(|r| format_err(path, r))?;
        let pkl = archive
            .names()
            .iter()
            .filter(|n| n.ends_with("data.pkl") && (n.len() == 8 || n.ends_with("/data.pkl")))
            .min_by_key(|n| n.len())
            .cloned()
            .ok_or_else(|| format_err(path, "zip archive has no data.pkl: not a torch.save checkpoint"))?;
        let prefix = pkl[..pkl.len() - "data.pkl".len()].to_string();
        let big_endian = if archive.contains(&format!("{prefix}byteorder")) {
            let b = archive.read(&format!("{prefix}byteorder")).map_err(|r| format_err(path, r))?;
            match b.as_slice() {
                b"little" => false,
                b"big" => true,
                _ => return Err(format_err(path, "unknown byteorder entry")),
            }
        } else {
            false
        };
        let data = archive.read(&pkl).map_err(|r| format_err(path, r))?;
        let mut pos = 0;
        let root = pickle::load(&data, &mut pos, &mut load_storage).map_err(|e| pickle_err(path, e))?;
        Ok(TorchCheckpoint { path: path.to_path_buf(), root, source: Source::Zip { archive, prefix }, big_endian })
    }

    fn open_legacy(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let mut pos = 0;
        let mut none = |_: &PyValue| Err("unexpected persistent id in the header".to_string());
        let magic = pickle::load(&bytes, &mut pos, &mut none).map_err(|e| pickle_err(path, e))?;
        if magic != PyValue::BigInt(LEGACY_MAGIC.to_vec()) {
            return Err(format_err(path, "pickle stream is not a PyTorch checkpoint (magic number missing)"));
        }
        let proto = pickle::load(&bytes, &mut pos, &mut none).map_err(|e| pickle_err(path, e))?;
        if proto != PyValue::Int(1001) {
            return Err(format_err(path, format!("unsupported legacy checkpoint protocol {proto:?}")));
        }
        let sys_info = pickle::load(&bytes, &mut pos, &mut none).map_err(|e| pickle_err(path, e))?;
        let big_endian = matches!(sys_info.get("little_endian"), Some(PyValue::Bool(false)));
        let root = pickle::load(&bytes, &mut pos, &mut load_storage).map_err(|e| pickle_err(path, e))?;
        let keys = pickle::load(&bytes, &mut pos, &mut none).map_err(|e| pickle_err(path, e))?;
        let keys = match keys {
            PyValue::List(k) => k,
            other => return Err(format_err(path, format!("legacy storage key list is {}", other.kind()))),
        };
        // Each storage: i64 element count, then the raw bytes. Element sizes come from the pickle.
        let mut sizes: HashMap<String, usize> = HashMap::new();
        collect_storages(&root, &mut sizes, 0);
        let mut storages = HashMap::new();
        for k in keys {
            let key = match k {
                PyValue::Str(s) => s,
                other => return Err(format_err(path, format!("legacy storage key is {}", other.kind()))),
            };
            let elem =
                *sizes.get(&key).ok_or_else(|| format_err(path, format!("storage '{key}' is not referenced")))?;
            let head = bytes.get(pos..pos + 8).ok_or_else(|| format_err(path, "truncated legacy checkpoint"))?;
            let mut a = [0u8; 8];
            a.copy_from_slice(head);
            let numel = if big_endian { i64::from_be_bytes(a) } else { i64::from_le_bytes(a) };
            let nbytes = usize::try_from(numel)
                .ok()
                .and_then(|n| n.checked_mul(elem))
                .ok_or_else(|| format_err(path, format!("storage '{key}': bad size")))?;
            let start = pos + 8;
            if start.checked_add(nbytes).is_none_or(|e| e > bytes.len()) {
                return Err(format_err(path, format!("truncated legacy checkpoint (storage '{key}')")));
            }
            storages.insert(key, (start, nbytes));
            pos = start + nbytes;
        }
        Ok(TorchCheckpoint { path: path.to_path_buf(), root, source: Source::Legacy { storages, bytes }, big_endian })
    }

    /// The file this checkpoint was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The unpickled top-level object (tensors appear as [`PyValue::Tensor`] references).
    pub fn root(&self) -> &PyValue {
        &self.root
    }

    /// String keys of the top-level dictionary (empty when the top level is not a dictionary).
    pub fn top_level_keys(&self) -> Vec<String> {
        match &self.root {
            PyValue::Dict(items) => items.iter().filter_map(|(k, _)| k.key_string()).collect(),
            _ => Vec::new(),
        }
    }

    /// Resolves `key_path` (string keys separated by `/`; `""` = top level) to a value.
    pub fn get(&self, key_path: &str) -> Result<&PyValue> {
        let mut cur = &self.root;
        let mut walked = String::new();
        for seg in key_path.split('/').filter(|s| !s.is_empty()) {
            let items = match cur {
                PyValue::Dict(items) => items,
                other => {
                    return Err(self.key_err(key_path, format!("'{walked}' is {} not a dictionary", other.kind())));
                }
            };
            match items.iter().find(|(k, _)| k.key_string().as_deref() == Some(seg)) {
                Some((_, v)) => cur = v,
                None => {
                    let avail: Vec<String> = items.iter().filter_map(|(k, _)| k.key_string()).take(20).collect();
                    return Err(self.key_err(key_path, format!("no key '{seg}' (keys here: {})", avail.join(", "))));
                }
            }
            if !walked.is_empty() {
                walked.push('/');
            }
            walked.push_str(seg);
        }
        Ok(cur)
    }

    fn key_err(&self, key_path: &str, reason: String) -> WeightsError {
        WeightsError::KeyPath { path: self.path.clone(), key_path: key_path.to_string(), reason }
    }

    /// Materialises every tensor of the dictionary at `key_path` (see [`read_torch`]).
    pub fn state_dict(&mut self, key_path: &str) -> Result<StateDict> {
        let node = self.get(key_path)?;
        if !matches!(node, PyValue::Dict(_)) {
            return Err(self.key_err(key_path, format!("is {} not a dictionary", node.kind())));
        }
        let mut refs: Vec<(String, TensorRef)> = Vec::new();
        flatten(node, "", &mut refs, 0);
        // Read each storage once; release it after its last user.
        let mut uses: HashMap<String, usize> = HashMap::new();
        for (_, t) in &refs {
            *uses.entry(t.storage.key.clone()).or_default() += 1;
        }
        refs.sort_by(|a, b| a.1.storage.key.cmp(&b.1.storage.key).then(a.0.cmp(&b.0)));
        let mut cache: HashMap<String, TensorValues> = HashMap::new();
        let mut out = StateDict::new();
        for (key, t) in refs {
            let skey = t.storage.key.clone();
            if !cache.contains_key(&skey) {
                let vals = self.read_storage(&key, &t.storage)?;
                cache.insert(skey.clone(), vals);
            }
            let remaining = uses.get_mut(&skey).map(|u| {
                *u -= 1;
                *u
            });
            let whole =
                t.offset == 0 && is_contiguous(&t.shape, &t.stride) && numel(&t.shape) == Some(cache[&skey].len());
            let data = if whole && remaining == Some(0) {
                cache.remove(&skey).unwrap_or(TensorValues::F32(Vec::new()))
            } else {
                let d = gather(&cache[&skey], &t).map_err(|reason| self.tensor_err(&key, reason))?;
                if remaining == Some(0) {
                    cache.remove(&skey);
                }
                d
            };
            out.insert(key, TensorData { shape: t.shape.clone(), dtype: t.storage.dtype, data });
        }
        Ok(out)
    }

    fn tensor_err(&self, key: &str, reason: String) -> WeightsError {
        WeightsError::Tensor { path: self.path.clone(), key: key.to_string(), reason }
    }

    fn read_storage(&mut self, key: &str, s: &StorageRef) -> Result<TensorValues> {
        let need =
            s.numel.checked_mul(s.dtype.size()).ok_or_else(|| self.tensor_err(key, "storage size overflows".into()))?;
        let big_endian = self.big_endian;
        let bytes: Vec<u8> = match &mut self.source {
            Source::Zip { archive, prefix } => {
                let name = format!("{prefix}data/{}", s.key);
                match archive.read(&name) {
                    Ok(b) => b,
                    Err(r) => return Err(self.tensor_err(key, format!("storage {}: {r}", s.key))),
                }
            }
            Source::Legacy { storages, bytes } => match storages.get(&s.key) {
                Some(&(start, len)) => bytes[start..start + len].to_vec(),
                None => return Err(self.tensor_err(key, format!("storage {} is missing", s.key))),
            },
        };
        if bytes.len() < need {
            return Err(self.tensor_err(
                key,
                format!("storage {} holds {} bytes, {} {} values need {need}", s.key, bytes.len(), s.numel, s.dtype),
            ));
        }
        decode_contiguous(s.dtype, &bytes[..need], big_endian).map_err(|r| self.tensor_err(key, r))
    }
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn collect_storages(v: &PyValue, out: &mut HashMap<String, usize>, depth: usize) {
    if depth > 200 {
        return;
    }
    match v {
        PyValue::Tensor(t) => {
            out.insert(t.storage.key.clone(), t.storage.dtype.size());
        }
        PyValue::Storage(s) => {
            out.insert(s.key.clone(), s.dtype.size());
        }
        PyValue::Tuple(items) | PyValue::List(items) => items.iter().for_each(|x| collect_storages(x, out, depth + 1)),
        PyValue::Dict(items) => items.iter().for_each(|(k, x)| {
            collect_storages(k, out, depth + 1);
            collect_storages(x, out, depth + 1)
        }),
        PyValue::Object { args, state, .. } => {
            collect_storages(args, out, depth + 1);
            if let Some(s) = state {
                collect_storages(s, out, depth + 1);
            }
        }
        _ => {}
    }
}

fn flatten(v: &PyValue, prefix: &str, out: &mut Vec<(String, TensorRef)>, depth: usize) {
    if depth > 64 {
        return;
    }
    if let PyValue::Dict(items) = v {
        for (k, x) in items {
            let Some(k) = k.key_string() else { continue };
            let name = if prefix.is_empty() { k } else { format!("{prefix}.{k}") };
            match x {
                PyValue::Tensor(t) => out.push((name, t.clone())),
                PyValue::Dict(_) => flatten(x, &name, out, depth + 1),
                _ => {}
            }
        }
    }
}

fn numel(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d))
}

fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expect = 1usize;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != expect {
            return false;
        }
        expect = expect.saturating_mul(d);
    }
    true
}

/// Copies the strided view `t` out of the decoded storage `src` in row-major order.
fn gather(src: &TensorValues, t: &TensorRef) -> std::result::Result<TensorValues, String> {
    let n = numel(&t.shape).ok_or("tensor size overflows")?;
    if n > 0 {
        let mut last = t.offset;
        for (&d, &s) in t.shape.iter().zip(&t.stride) {
            last = (d - 1).checked_mul(s).and_then(|x| x.checked_add(last)).ok_or("tensor view overflows")?;
        }
        if last >= src.len() {
            return Err(format!(
                "view (offset {}, size {:?}, stride {:?}) reaches element {last} of a storage of {}",
                t.offset,
                t.shape,
                t.stride,
                src.len()
            ));
        }
    }
    // Broadcast views (stride 0) may be larger than their storage, but not absurdly so.
    if n > src.len().saturating_mul(4096).max(1 << 24) {
        return Err(format!("view of {n} elements over a storage of {} is implausibly large", src.len()));
    }
    let idx = strided_indices(&t.shape, &t.stride, t.offset, n);
    Ok(match src {
        TensorValues::F32(v) => TensorValues::F32(idx.iter().map(|&i| v[i]).collect()),
        TensorValues::I64(v) => TensorValues::I64(idx.iter().map(|&i| v[i]).collect()),
    })
}

fn strided_indices(shape: &[usize], stride: &[usize], offset: usize, n: usize) -> Vec<usize> {
    let mut out = Vec::with_capacity(n);
    if n == 0 {
        return out;
    }
    let rank = shape.len();
    let mut counter = vec![0usize; rank];
    let mut cur = offset;
    for _ in 0..n {
        out.push(cur);
        // Increment the multi-index, last dimension fastest.
        let mut d = rank;
        while d > 0 {
            d -= 1;
            counter[d] += 1;
            cur = cur.wrapping_add(stride[d]);
            if counter[d] < shape[d] {
                break;
            }
            cur = cur.wrapping_sub(stride[d].wrapping_mul(shape[d]));
            counter[d] = 0;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strided_indices_of_a_transpose() {
        // A 3x2 view of a row-major 2x3 buffer (transpose): strides (1, 3).
        assert_eq!(strided_indices(&[3, 2], &[1, 3], 0, 6), vec![0, 3, 1, 4, 2, 5]);
        assert_eq!(strided_indices(&[2, 2], &[0, 1], 4, 4), vec![4, 5, 4, 5]);
        assert_eq!(strided_indices(&[], &[], 7, 1), vec![7]);
        assert!(is_contiguous(&[2, 3], &[3, 1]));
        assert!(is_contiguous(&[2, 1], &[1, 99]));
        assert!(!is_contiguous(&[3, 2], &[1, 3]));
    }
}
