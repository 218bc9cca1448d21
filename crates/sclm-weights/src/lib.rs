//! Reading published model weights without a tensor library.
//!
//! * [`read_torch`] / [`TorchCheckpoint`]: checkpoints written by `torch.save` — the zip format (PyTorch ≥ 1.6:
//!   `<name>/data.pkl` plus one `<name>/data/<key>` file per storage) and the legacy single-stream format —
//!   through a small pickle interpreter that executes nothing ([`pickle`]). Tensors of dtype
//!   f32/f64/f16/bf16 become `f32`; i64/i32/i16/i8/u8/bool become `i64`; non-contiguous views are gathered.
//! * [`read_safetensors`] / [`write_safetensors`].
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
