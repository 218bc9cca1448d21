//! Reading published model weights without a tensor library.
//!
//! * [`read_torch`] / [`TorchCheckpoint`]: checkpoints written by `torch.save` — the zip format (PyTorch ≥ 1.6:
//!   `<name>/data.pkl` plus one `<name>/data/<key>` file per storage) and the legacy single-stream format —
//!   through a small pickle interpreter that executes nothing ([`pickle`]). Tensors of dtype
//!   f32/f64/f16/bf16 become `f32`; i64/i32/i16/i8/u8/bool become `i64`; non-contiguous views are gathered.
//! * [`read_safetensors`] / [`write_safetensors`]; [`read_weights`] picks the reader from the file header.
//! * [`LoadReport`] / [`TensorLoader`]: model importers account for every tensor (loaded, skipped, missing,
//!   shape mismatch) so that a checkpoint is never loaded partially without notice.
//!
//! ```no_run
//! let sd = sclm_weights::read_torch("model.best.ckpt", "model_state_dict")?;
//! let emb = &sd["embedder.feat_enc.emb"];
//! println!("{:?} {}", emb.shape, emb.dtype);
//! # Ok::<(), sclm_weights::WeightsError>(())
//! ```
#![warn(missing_docs)]

mod error;
pub mod pickle;
mod report;
mod st;
mod tensor;
mod torch;
mod zipfile;

pub use error::{Result, WeightsError};
pub use pickle::{PyValue, StorageRef, TensorRef};
pub use report::{LoadReport, ShapeMismatch, TensorLoader};
pub use st::{read_safetensors, read_safetensors_with_metadata, write_safetensors};
pub use tensor::{DType, StateDict, TensorData, TensorValues};
pub use torch::{read_torch, TorchCheckpoint};

/// Reads a weights file of either kind: a PyTorch checkpoint (recognised by its zip or pickle header;
/// `key_path` selects the dictionary, see [`read_torch`]) or otherwise a safetensors file (`key_path` must
/// then be empty or name a `prefix.`: only tensors whose names start with `key_path.` are kept, prefix removed).
pub fn read_weights(path: impl AsRef<std::path::Path>, key_path: &str) -> Result<StateDict> {
    let path = path.as_ref();
    let mut head = [0u8; 4];
    let n = {
        use std::io::Read;
        let mut f =
            std::fs::File::open(path).map_err(|source| WeightsError::Io { path: path.to_path_buf(), source })?;
        let mut n = 0;
        while n < head.len() {
            match f.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(source) => return Err(WeightsError::Io { path: path.to_path_buf(), source }),
            }
        }
        n
    };
    if head[..n].starts_with(b"PK") || head[..n].first() == Some(&0x80) {
        return read_torch(path, key_path);
    }
    let sd = read_safetensors(path)?;
    if key_path.is_empty() {
        return Ok(sd);
    }
    let prefix = format!("{}.", key_path.trim_end_matches('.').replace('/', "."));
    let out: StateDict =
        sd.into_iter().filter_map(|(k, v)| k.strip_prefix(&prefix).map(|s| (s.to_string(), v))).collect();
    if out.is_empty() {
        return Err(WeightsError::KeyPath {
            path: path.to_path_buf(),
            key_path: key_path.to_string(),
            reason: "no tensor name starts with this prefix".into(),
        });
    }
    Ok(out)
}
