//! AdamW with parameter groups, gradient clipping by global norm and gradient scaling.
//!
//! Burn's `ModuleOptimizer::step` takes one learning rate per call and applies it to every
//! parameter that has a gradient. Groups are therefore implemented by splitting the gradients
//! per group (by module path prefix) and calling one AdamW per group with its own learning rate
//! and weight decay; a parameter without a gradient in a call is left untouched, so each group
//! only moves its own parameters and keeps its own moment estimates.
use std::collections::HashMap;
use std::path::Path;

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::prelude::*;

use crate::NnError;

/// A parameter group: parameters whose module path starts with one of `prefixes`.
#[derive(Config, Debug)]
pub struct ParamGroupConfig {
    /// Group name (used for the optimiser-state file and logs).
    pub name: String,
    /// Module-path prefixes selecting the group's parameters, e.g. `["embedder"]`.
    pub prefixes: Vec<String>,
    /// Learning rate of the group relative to the base learning rate (default 1).
    #[config(default = 1.0)]
    pub lr_scale: f64,
    /// Weight decay of the group; `None` (default) = the optimiser's.
    #[config(default = "None")]
    pub weight_decay: Option<f64>,
}

/// Configuration of [`GroupedAdamW`].
#[derive(Config, Debug)]
pub struct OptimizerConfig {
    /// Decoupled weight decay of the default group (default 0.01).
    #[config(default = 0.01)]
    pub weight_decay: f64,
    /// Adam β₁ (default 0.9).
    #[config(default = 0.9)]
    pub beta1: f64,
    /// Adam β₂ (default 0.999).
    #[config(default = 0.999)]
    pub beta2: f64,
    /// Adam ε (default 1e-8).
    #[config(default = 1e-8)]
    pub eps: f64,
    /// Extra groups; parameters matching none form the default group (first match wins).
    #[config(default = "Vec::new()")]
    pub groups: Vec<ParamGroupConfig>,
    /// Clip gradients to this global L2 norm (default none).
    #[config(default = "None")]
    pub clip_grad_norm: Option<f64>,
}

/// Module path of every float parameter (enum variant names skipped, so paths read like
/// PyTorch state-dict keys: `encoder.layers.0.self_attn.query_projection.weight`).
pub fn param_paths<M: Module>(module: &M) -> Vec<(String, ParamId)> {
    struct V {
        stack: Vec<Option<String>>,
        out: Vec<(String, ParamId)>,
    }
    impl ModuleVisitor for V {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.stack.push((!container_type.starts_with("Enum")).then(|| name.to_string()));
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let path: Vec<&str> = self.stack.iter().flatten().map(|s| s.as_str()).collect();
            self.out.push((path.join("."), p.id));
        }
    }
    let mut v = V { stack: Vec::new(), out: Vec::new() };
    module.visit(&mut v);
    v.out
}

/// Replaces parameter ids by those recorded for the same paths (used on resume, so that saved
/// optimiser state keyed by id finds its parameters again).
pub fn restore_param_ids<M: Module>(module: M, ids: &HashMap<String, u64>) -> M {
    struct Mp<'a> {
        stack: Vec<Option<String>>,
        ids: &'a HashMap<String, u64>,
    }
    impl ModuleMapper for Mp<'_> {
        fn enter_module(&mut self, name: &str, container_type: &str) {
            self.stack.push((!container_type.starts_with("Enum")).then(|| name.to_string()));
        }
        fn exit_module(&mut self, _: &str, _: &str) {
            self.stack.pop();
        }
        fn map_float<const D: usize>(&mut self, p: Param<Tensor<D>>) -> Param<Tensor<D>> {
            let path: Vec<&str> = self.stack.iter().flatten().map(|s| s.as_str()).collect();
            let (id, value, mapper) = p.consume();
            let id = self.ids.get(&path.join(".")).map(|&v| ParamId::from(v)).unwrap_or(id);
            Param::from_mapped_value(id, value, mapper)
        }
    }
    module.map(&mut Mp { stack: Vec::new(), ids })
}

/// Forces lazily initialised parameters of `module` to be materialised.
pub fn touch_params<M: Module>(module: &M) {
    struct V;
    impl ModuleVisitor for V {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            let _ = p.val();
        }
    }
    module.visit(&mut V);
}

/// Global L2 norm of the gradients of `module`'s parameters.
pub fn grad_global_norm<M: Module>(module: &M, grads: &GradientsParams) -> f64 {
    struct V<'a> {
        grads: &'a GradientsParams,
        sum: f64,
    }
    impl ModuleVisitor for V<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.get::<D>(p.id) {
                self.sum += crate::util::scalar(g.powi_scalar(2).sum());
            }
        }
    }
    let mut v = V { grads, sum: 0.0 };
    module.visit(&mut v);
    v.sum.sqrt()
}

/// Multiplies every gradient of `module`'s parameters by `factor`.
pub fn scale_grads<M: Module>(module: &M, grads: &mut GradientsParams, factor: f64) {
    struct V<'a> {
        grads: &'a mut GradientsParams,
        factor: f64,
    }
    impl ModuleVisitor for V<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(p.id) {
                self.grads.register::<D>(p.id, g.mul_scalar(self.factor));
            }
        }
    }
    module.visit(&mut V { grads, factor });
}

/// Clips gradients to a global L2 norm of at most `max_norm`; returns the norm before clipping.
pub fn clip_grad_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let norm = grad_global_norm(module, grads);
    if norm > max_norm && norm.is_finite() {
        scale_grads(module, grads, max_norm / (norm + 1e-6));
    }
    norm
}

/// AdamW with parameter groups (own learning-rate scale and weight decay each).
#[derive(Clone)]
pub struct GroupedAdamW {
    config: OptimizerConfig,
    /// One optimiser per extra group, then the default group last.
    optims: Vec<ModuleOptimizer>,
}

impl GroupedAdamW {
    /// Builds the optimisers.
    pub fn new(config: OptimizerConfig) -> Self {
        let make = |wd: f64| -> ModuleOptimizer {
            AdamWConfig::new()
                .with_beta_1(config.beta1 as f32)
                .with_beta_2(config.beta2 as f32)
                .with_epsilon(config.eps as f32)
                .with_weight_decay(wd as f32)
                .init()
        };
        let mut optims: Vec<ModuleOptimizer> =
            config.groups.iter().map(|g| make(g.weight_decay.unwrap_or(config.weight_decay))).collect();
        optims.push(make(config.weight_decay));
        Self { config, optims }
    }

    /// The configuration.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Index of the group of `path` (`groups.len()` = default group).
    pub fn group_of(&self, path: &str) -> usize {
        self.config
            .groups
            .iter()
            .position(|g| g.prefixes.iter().any(|p| path == p || path.starts_with(&format!("{p}."))))
            .unwrap_or(self.config.groups.len())
    }

    /// Group names, default group last (`"default"`).
    pub fn group_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.config.groups.iter().map(|g| g.name.clone()).collect();
        names.push("default".into());
        names
    }

    /// One update with base learning rate `lr`: clips (if configured), splits the gradients by
    /// group and steps each group. Returns the global gradient norm before clipping.
    pub fn step<M: Module>(&mut self, lr: f64, module: M, mut grads: GradientsParams) -> (M, f64) {
        let norm = match self.config.clip_grad_norm {
            Some(max) => clip_grad_norm(&module, &mut grads, max),
            None => grad_global_norm(&module, &grads),
        };
        let paths = param_paths(&module);
        let n_groups = self.optims.len();
        let mut split: Vec<GradientsParams> = (0..n_groups).map(|_| GradientsParams::new()).collect();
        move_grads(&module, &mut grads, &mut split, &|p: &str| self.group_of(p), &paths);
        let mut module = module;
        for (gi, g) in split.into_iter().enumerate() {
            if g.is_empty() {
                continue;
            }
            let scale = self.config.groups.get(gi).map(|c| c.lr_scale).unwrap_or(1.0);
            module = self.optims[gi].step(lr * scale, module, g);
        }
        (module, norm)
    }

    /// Saves each group's state to `dir/optimizer.<group>.bpk`.
    pub fn save(&self, dir: &Path) -> Result<(), NnError> {
        for (name, o) in self.group_names().iter().zip(&self.optims) {
            let path = dir.join(format!("optimizer.{name}.bpk"));
            o.save(&path)
                .map_err(|e| NnError::Store { path: path.display().to_string(), message: format!("{e:?}") })?;
        }
        Ok(())
    }

    /// Loads each group's state from `dir` (written by [`GroupedAdamW::save`]).
    pub fn load(mut self, dir: &Path) -> Result<Self, NnError> {
        let names = self.group_names();
        let mut optims = Vec::new();
        for (name, o) in names.iter().zip(self.optims.drain(..)) {
            let path = dir.join(format!("optimizer.{name}.bpk"));
            optims.push(
                o.load(&path)
                    .map_err(|e| NnError::Store { path: path.display().to_string(), message: format!("{e:?}") })?,
            );
        }
        self.optims = optims;
        Ok(self)
    }
}

fn move_grads<M: Module>(
    module: &M,
    grads: &mut GradientsParams,
    split: &mut [GradientsParams],
    group_of: &dyn Fn(&str) -> usize,
    paths: &[(String, ParamId)],
) {
    let by_id: HashMap<ParamId, usize> = paths.iter().map(|(p, id)| (*id, group_of(p))).collect();
    struct V<'a> {
        grads: &'a mut GradientsParams,
        split: &'a mut [GradientsParams],
        by_id: &'a HashMap<ParamId, usize>,
    }
    impl ModuleVisitor for V<'_> {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            if let Some(g) = self.grads.remove::<D>(p.id) {
                let gi = self.by_id.get(&p.id).copied().unwrap_or(self.split.len() - 1);
                self.split[gi].register::<D>(p.id, g);
            }
        }
    }
    module.visit(&mut V { grads, split, by_id: &by_id });
}
