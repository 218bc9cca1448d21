//! Pieces of momentum-encoder steps (MoCo, ALBEF, LangCell): an exponential moving average
//! of a model's weights ([`ema_update`]) and a first-in-first-out queue of past embeddings
//! ([`EmbeddingQueue`]); both fit into a [`StepState`] so that such a step resumes exactly.
use burn::module::{Module, ModuleMapper, ModuleVisitor, Param};
use burn::prelude::*;

use super::step::StepState;
use crate::NnError;

/// A momentum copy of `model` (same weights, no gradients), to start an EMA encoder.
///
/// Parameters are materialised first: burn initialises parameters lazily and clones share the
/// pending initialisation, so turning off gradients on a clone of a fresh model would turn
/// them off for the model too.
pub fn ema_copy<M: Module>(model: &M) -> M {
    super::optim::touch_params(model);
    model.clone().no_grad()
}

/// `ema ← momentum · ema + (1 − momentum) · model`, parameter by parameter (same
/// architecture, parameters visited in the same order). The result is detached: the EMA copy
/// never takes part in back-propagation. `ema` may live on another device than `model`.
pub fn ema_update<M: Module>(ema: M, model: &M, momentum: f64) -> Result<M, NnError> {
    struct Collect(Vec<Tensor<1>>);
    impl ModuleVisitor for Collect {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let v = p.val().detach();
            let n = v.shape().num_elements();
            self.0.push(v.reshape([n]));
        }
    }
    struct Update {
        src: std::vec::IntoIter<Tensor<1>>,
        momentum: f64,
        error: Option<String>,
    }
    impl ModuleMapper for Update {
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let (id, value, mapper) = p.consume();
            let shape = value.shape();
            let value = match self.src.next() {
                Some(s) if s.shape().num_elements() == shape.num_elements() => {
                    let s = s.to_device(&value.device()).reshape(shape);
                    (value.detach().mul_scalar(self.momentum) + s.mul_scalar(1.0 - self.momentum)).detach()
                }
                _ => {
                    self.error.get_or_insert_with(|| format!("parameter {id} of shape {shape}"));
                    value
                }
            };
            Param::from_mapped_value(id, value, mapper)
        }
    }
    let mut c = Collect(Vec::new());
    model.visit(&mut c);
    let n = c.0.len();
    let mut u = Update { src: c.0.into_iter(), momentum, error: None };
    let ema = ema.map(&mut u);
    match u.error {
        Some(e) => Err(NnError::Shape(format!("EMA copy and model differ in architecture: {e}"))),
        None if u.src.len() > 0 => {
            Err(NnError::Shape(format!("EMA copy has fewer parameters than the model ({n} in the model)")))
        }
        None => Ok(ema),
    }
}

/// A first-in-first-out queue of the `capacity` most recent embeddings (`dim` each), the
/// negatives of momentum contrast. Held on a device; pushing overwrites the oldest rows.
#[derive(Debug, Clone)]
pub struct EmbeddingQueue {
    data: Tensor<2>,
    capacity: usize,
    dim: usize,
    /// Next row to write.
    ptr: usize,
    /// Rows filled so far (≤ capacity).
    len: usize,
}

impl EmbeddingQueue {
    /// An empty queue.
    pub fn new(capacity: usize, dim: usize, device: &Device) -> Result<Self, NnError> {
        if capacity == 0 || dim == 0 {
            return Err(NnError::Config(format!("embedding queue of {capacity} × {dim}")));
        }
        Ok(Self { data: Tensor::zeros([capacity, dim], device), capacity, dim, ptr: 0, len: 0 })
    }

    /// Rows filled.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was pushed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Capacity in rows.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The filled rows, `[len, dim]` (storage order; detached). `None` while empty.
    pub fn embeddings(&self) -> Option<Tensor<2>> {
        (self.len > 0).then(|| self.data.clone().narrow(0, 0, self.len))
    }

    /// Pushes the rows of `keys` (`[n, dim]`, detached here), overwriting the oldest rows when
    /// full; of more than `capacity` rows only the last `capacity` are kept.
    pub fn push(&mut self, keys: Tensor<2>) -> Result<(), NnError> {
        let [n, d] = keys.dims();
        if d != self.dim {
            return Err(NnError::Shape(format!("queue of dimension {} given keys of dimension {d}", self.dim)));
        }
        let keys = keys.detach().to_device(&self.data.device());
        let (keys, n) = if n > self.capacity {
            (keys.narrow(0, n - self.capacity, self.capacity), self.capacity)
        } else {
            (keys, n)
        };
        let first = n.min(self.capacity - self.ptr);
        if first > 0 {
            let part = keys.clone().narrow(0, 0, first);
            self.data = self.data.clone().slice_assign([self.ptr..self.ptr + first, 0..d], part);
        }
        if first < n {
            let part = keys.narrow(0, first, n - first);
            self.data = self.data.clone().slice_assign([0..n - first, 0..d], part);
        }
        self.ptr = (self.ptr + n) % self.capacity;
        self.len = (self.len + n).min(self.capacity);
        Ok(())
    }

    /// Adds the queue to `state` as the tensor `<name>` and the meta entry `<name>`.
    pub fn save_into(&self, name: &str, mut state: StepState) -> StepState {
        if !state.meta.is_object() {
            state.meta = serde_json::json!({});
        }
        state.meta[name] = serde_json::json!({ "ptr": self.ptr, "len": self.len });
        state.with_tensor(name, self.data.to_data())
    }

    /// Restores a queue saved by [`save_into`](Self::save_into) onto this queue's device
    /// (capacity and dimension must match).
    pub fn load_from(&mut self, name: &str, state: &StepState) -> Result<(), NnError> {
        let data = state.tensor(name)?;
        if data.shape().as_slice() != [self.capacity, self.dim] {
            return Err(NnError::Shape(format!(
                "queue {name}: saved {}, expected [{}, {}]",
                data.shape(),
                self.capacity,
                self.dim
            )));
        }
        let meta = &state.meta[name];
        let get = |k: &str| meta[k].as_u64().map(|v| v as usize).filter(|&v| v <= self.capacity);
        let (Some(ptr), Some(len)) = (get("ptr"), get("len")) else {
            return Err(NnError::Config(format!("step state lacks a valid pointer for queue {name}")));
        };
        self.data = Tensor::from_data(data.clone(), &self.data.device());
        self.ptr = ptr % self.capacity;
        self.len = len;
        Ok(())
    }
}
