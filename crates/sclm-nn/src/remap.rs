//! Declarative weight remap tables: every parameter of a module paired with its name and
//! layout in a published PyTorch state dict. A torch `Linear.weight` is `[out, in]` while
//! burn's is `[in, out]`: such entries are marked transposed. One table per model family serves
//! importing published checkpoints, writing and reading the model directory (safetensors under
//! the published names) and naming the trainer's checkpoints ([`name_entries`]).
//!
//! The table is a list of `(published name, Slot)`; a [`Slot`] borrows the parameter mutably,
//! so building the table needs `&mut` access to the module (a clone shares the tensors and
//! parameter ids, which is how [`name_entries`] reads one without changing the model).
use std::collections::HashMap;

use burn::module::{Module, Param, ParamId};
use burn::nn::{Embedding, LayerNorm, Linear};
use burn::prelude::*;
use burn::tensor::TensorData;

use crate::encoder::Norm;
use crate::error::NnError;
use crate::train::optim::param_paths;
use crate::train::NameEntry;

/// A parameter of a module and how it is stored in the state dict.
pub enum Slot<'a> {
    /// A vector, stored as is.
    Vec1(&'a mut Param<Tensor<1>>),
    /// A matrix; `true` = stored transposed (torch `Linear.weight`).
    Mat(&'a mut Param<Tensor<2>>, bool),
}

impl Slot<'_> {
    /// Shape in the state dict.
    pub fn torch_shape(&self) -> Vec<usize> {
        match self {
            Slot::Vec1(p) => p.dims().to_vec(),
            Slot::Mat(p, t) => {
                let [a, b] = p.dims();
                if *t {
                    vec![b, a]
                } else {
                    vec![a, b]
                }
            }
        }
    }

    /// Replaces the parameter by `values` (state-dict layout, [`Slot::torch_shape`]).
    pub fn set(&mut self, values: Vec<f32>, device: &Device) {
        match self {
            Slot::Vec1(p) => {
                let n = values.len();
                **p = Param::from_tensor(Tensor::from_data(TensorData::new(values, [n]), device));
            }
            Slot::Mat(p, t) => {
                let [a, b] = p.dims();
                let v = if *t { transpose(&values, b, a) } else { values };
                **p = Param::from_tensor(Tensor::from_data(TensorData::new(v, [a, b]), device));
            }
        }
    }

    /// The id of the parameter (what ties the slot to its module path).
    pub fn id(&self) -> ParamId {
        match self {
            Slot::Vec1(p) => p.id,
            Slot::Mat(p, _) => p.id,
        }
    }

    /// Whether the state dict stores the parameter transposed.
    pub fn transposed(&self) -> bool {
        matches!(self, Slot::Mat(_, true))
    }

    /// The values in state-dict layout.
    pub fn get(&self) -> Vec<f32> {
        match self {
            Slot::Vec1(p) => crate::util::to_vec(p.val()),
            Slot::Mat(p, t) => {
                let [a, b] = p.dims();
                let v = crate::util::to_vec(p.val());
                if *t {
                    transpose(&v, a, b)
                } else {
                    v
                }
            }
        }
    }
}

/// A remap table: published name → parameter.
pub type Slots<'a> = Vec<(String, Slot<'a>)>;

/// Row-major `[r, c]` → `[c, r]`.
pub fn transpose(v: &[f32], r: usize, c: usize) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    for i in 0..r {
        for j in 0..c {
            out[j * r + i] = v[i * c + j];
        }
    }
    out
}

/// A torch `nn.Linear` at `prefix` (`.weight` transposed, `.bias` when present).
pub fn linear<'a>(t: &mut Slots<'a>, prefix: &str, l: &'a mut Linear) {
    t.push((format!("{prefix}.weight"), Slot::Mat(&mut l.weight, true)));
    if let Some(b) = l.bias.as_mut() {
        t.push((format!("{prefix}.bias"), Slot::Vec1(b)));
    }
}

/// A torch `nn.LayerNorm` at `prefix`.
pub fn layer_norm<'a>(t: &mut Slots<'a>, prefix: &str, n: &'a mut LayerNorm) {
    t.push((format!("{prefix}.weight"), Slot::Vec1(&mut n.gamma)));
    if let Some(b) = n.beta.as_mut() {
        t.push((format!("{prefix}.bias"), Slot::Vec1(b)));
    }
}

/// A LayerNorm or GroupNorm at `prefix`.
pub fn norm<'a>(t: &mut Slots<'a>, prefix: &str, n: &'a mut Norm) {
    match n {
        Norm::Layer(l) => layer_norm(t, prefix, l),
        Norm::Group(g) => {
            if let Some(w) = g.gamma.as_mut() {
                t.push((format!("{prefix}.weight"), Slot::Vec1(w)));
            }
            if let Some(b) = g.beta.as_mut() {
                t.push((format!("{prefix}.bias"), Slot::Vec1(b)));
            }
        }
    }
}

/// A torch `nn.Embedding` at `prefix` (`.weight`, `[rows, dim]` in both layouts).
pub fn embedding<'a>(t: &mut Slots<'a>, prefix: &str, e: &'a mut Embedding) {
    t.push((format!("{prefix}.weight"), Slot::Mat(&mut e.weight, false)));
}

/// The published name and layout of every entry of `slots` (the table of `module`, or of a
/// clone of it), keyed by the parameter's module path as the trainer's checkpoints spell it
/// ([`param_paths`]) with `module_prefix` in front.
pub fn name_entries<M: Module>(module: &M, slots: &Slots<'_>, module_prefix: &str) -> Result<Vec<NameEntry>, NnError> {
    let paths: HashMap<ParamId, String> = param_paths(module).into_iter().map(|(p, id)| (id, p)).collect();
    let mut out = Vec::with_capacity(slots.len());
    for (published, slot) in slots {
        let path = paths
            .get(&slot.id())
            .ok_or_else(|| NnError::Config(format!("weight {published}: its parameter is not a module parameter")))?;
        out.push(NameEntry {
            module_path: format!("{module_prefix}{path}"),
            published: published.clone(),
            transposed: slot.transposed(),
        });
    }
    Ok(out)
}
