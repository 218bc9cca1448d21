//! The generic classification head and fine-tuning recipe (paper recipes differ only in these
//! numbers), and the labelled cells a family's fine-tuning step receives.
use std::path::PathBuf;

use sclm_data::AnnData;
use sclm_nn::burn;
use sclm_nn::burn::module::Module;
use sclm_nn::burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use sclm_nn::burn::prelude::*;
use sclm_nn::train::{
    DecayKind, OptimizerConfig, ParamGroupConfig, ReduceOnPlateauConfig, ScheduleConfig, TrainConfig,
};
use serde::{Deserialize, Serialize};

use crate::api::EmbedOptions;

/// `Dropout → Linear(embedding → classes)`: the head every family puts on its cell embedding
/// (CellPLM: the published `CellTypeAnnotationPipeline` head with one layer). Saved by
/// [`ClassifierHead::to_state_dict`] as `head.weight` (`[classes, embedding]`, the torch
/// layout) and `head.bias`.
#[derive(Module, Debug)]
pub struct ClassifierHead {
    /// `Linear(embedding → classes)`.
    pub linear: Linear,
    dropout: Dropout,
}

/// Configuration of a [`ClassifierHead`].
#[derive(Config, Debug)]
pub struct ClassifierHeadConfig {
    /// Width of the cell embedding.
    pub d_input: usize,
    /// Number of classes.
    pub n_classes: usize,
    /// Dropout before the linear map (default 0.5, the published annotation value).
    #[config(default = 0.5)]
    pub dropout: f64,
}

impl ClassifierHeadConfig {
    /// Builds the head on `device`.
    pub fn init(&self, device: &Device) -> ClassifierHead {
        ClassifierHead {
            linear: LinearConfig::new(self.d_input, self.n_classes).init(device),
            dropout: DropoutConfig::new(self.dropout).init(),
        }
    }
}

impl ClassifierHead {
    /// Class logits.
    ///
    /// # Shapes
    /// - `z`: `[cells, d_input]` → `[cells, n_classes]`
    pub fn forward(&self, z: Tensor<2>) -> Tensor<2> {
        self.linear.forward(self.dropout.forward(z))
    }

    /// Number of classes.
    pub fn n_classes(&self) -> usize {
        self.linear.weight.dims()[1]
    }

    /// Width of the embedding it reads.
    pub fn d_input(&self) -> usize {
        self.linear.weight.dims()[0]
    }

    /// `head.weight` (`[classes, d_input]`, row-major) and `head.bias` (`[classes]`).
    pub fn to_parts(&self) -> (Vec<f32>, Vec<f32>) {
        let [i, o] = self.linear.weight.dims();
        let w: Vec<f32> = self.linear.weight.val().into_data().convert::<f32>().try_to_vec::<f32>().unwrap_or_default();
        let mut t = vec![0f32; w.len()];
        for r in 0..i {
            for c in 0..o {
                t[c * i + r] = w[r * o + c];
            }
        }
        let b = match &self.linear.bias {
            Some(b) => b.val().into_data().convert::<f32>().try_to_vec::<f32>().unwrap_or_default(),
            None => vec![0f32; o],
        };
        (t, b)
    }

    /// A head from `head.weight` (`[classes, d_input]`) and `head.bias`, with `dropout`.
    pub fn from_parts(
        weight: &[f32],
        bias: &[f32],
        d_input: usize,
        dropout: f64,
        device: &Device,
    ) -> crate::Result<Self> {
        let o = bias.len();
        if o == 0 || weight.len() != o * d_input {
            return Err(crate::ModelError::Config(format!(
                "head.weight has {} values, expected {o} classes × {d_input}",
                weight.len()
            )));
        }
        let mut w = vec![0f32; weight.len()];
        for c in 0..o {
            for r in 0..d_input {
                w[r * o + c] = weight[c * d_input + r];
            }
        }
        let mut h = ClassifierHeadConfig::new(d_input, o).with_dropout(dropout).init(device);
        h.linear.weight =
            burn::module::Param::from_tensor(Tensor::from_data(burn::tensor::TensorData::new(w, [d_input, o]), device));
        h.linear.bias = Some(burn::module::Param::from_tensor(Tensor::from_data(
            burn::tensor::TensorData::new(bias.to_vec(), [o]),
            device,
        )));
        Ok(h)
    }
}

/// Fine-tuning settings of a classifier (defaults: CellPLM's published annotation recipe,
/// scaled to CPU epochs; other families document theirs next to their step).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct FinetuneRecipe {
    /// Peak learning rate (published 5e-3).
    pub lr: f64,
    /// AdamW weight decay (published 1e-7).
    pub weight_decay: f64,
    /// Gene-embedding learning rate relative to `lr` (published 0.1).
    pub embedding_lr_scale: f64,
    /// Linear warm-up epochs (published 30 of up to 2,000 epochs); at most a tenth of `epochs`
    /// is used, so that short runs are not spent warming up.
    pub warmup_epochs: usize,
    /// Most epochs (published 2,000 with early stopping).
    pub epochs: usize,
    /// Early stopping after this many epochs without a better validation metric (published
    /// 200; default 50).
    pub patience: usize,
    /// Reduce-on-plateau patience (published 25).
    pub plateau_patience: usize,
    /// Gradient clipping norm (published 2.0).
    pub clip_grad_norm: f64,
    /// Dropout while fine-tuning (published `model_dropout` for annotation: 0.5).
    #[serde(alias = "head_dropout")]
    pub dropout: f64,
    /// Seed.
    pub seed: u64,
}

impl Default for FinetuneRecipe {
    fn default() -> Self {
        FinetuneRecipe {
            lr: 5e-3,
            weight_decay: 1e-7,
            embedding_lr_scale: 0.1,
            warmup_epochs: 30,
            epochs: 300,
            patience: 50,
            plateau_patience: 25,
            clip_grad_norm: 2.0,
            dropout: 0.5,
            seed: 0,
        }
    }
}

impl FinetuneRecipe {
    /// The trainer configuration for `steps_per_epoch` batches per epoch: AdamW (parameters
    /// under `embedding_params` at `embedding_lr_scale`), linear warm-up then constant rate
    /// with reduce-on-plateau on the (maximised) validation metric, early stopping.
    pub fn train_config(&self, steps_per_epoch: usize, embedding_params: Vec<String>) -> TrainConfig {
        let mut opt =
            OptimizerConfig::new().with_weight_decay(self.weight_decay).with_clip_grad_norm(Some(self.clip_grad_norm));
        if !embedding_params.is_empty() {
            opt = opt
                .with_groups(vec![ParamGroupConfig::new("gene_embedding".into(), embedding_params)
                    .with_lr_scale(self.embedding_lr_scale)]);
        }
        TrainConfig::new(
            opt,
            ScheduleConfig::new(self.lr)
                .with_warmup_steps(self.warmup_epochs.min(self.epochs / 10).max(1) * steps_per_epoch.max(1))
                .with_decay(DecayKind::Constant),
        )
        .with_seed(self.seed)
        .with_max_epochs(self.epochs)
        .with_plateau(Some(ReduceOnPlateauConfig::new().with_patience(self.plateau_patience).with_maximize(true)))
        .with_early_stopping_patience(Some(self.patience))
        .with_maximize_metric(true)
    }
}

/// Where a fine-tuning run keeps its log, checkpoints and best model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunOptions {
    /// Run directory (`log.jsonl`, `checkpoint/`, `best/`); none = in memory only.
    pub run_dir: Option<PathBuf>,
    /// Continue the interrupted run in `run_dir`.
    pub resume: bool,
}

/// The labelled cells of a fine-tuning run, as the task protocol chose them: every cell of
/// `adata` may be read (transductive models see unlabelled cells in their groups), the loss
/// uses `labels` of the `train` rows and model selection those of the `valid` rows.
pub struct LabeledCells<'a> {
    /// The data (counts in X or `opts.layer`).
    pub adata: &'a AnnData,
    /// How the model reads it.
    pub opts: &'a EmbedOptions,
    /// Class names, in output order.
    pub classes: &'a [String],
    /// Class of each cell (`None` = unlabelled or excluded).
    pub labels: &'a [Option<usize>],
    /// Training rows (sorted).
    pub train: &'a [usize],
    /// Validation rows (sorted).
    pub valid: &'a [usize],
}
