//! Fine-tuned cell-type annotation (LangCell §4.2, PharMolix/LangCell@69e41ef
//! `LangCell-CE-annotation/finetune.py`): the cell encoder with a classification head on its
//! `[CLS]` state, every layer trained, cross-entropy.
//!
//! The published script uses `BertForSequenceClassification`, whose pooler (dense + tanh) the
//! published checkpoint does not hold, so Hugging Face starts it at random; we leave it out and
//! read the `[CLS]` state directly (one random layer fewer). Published recipe: AdamW, peak
//! learning rate 5e-5, 500 warm-up steps then linear decay, batch 16, 20 epochs, classifier
//! dropout = the encoder's hidden dropout. [`FinetuneRecipe`] fields left at their defaults
//! (CellPLM's numbers) are replaced by these; a field set to anything else is used as given.
//! The model of the epoch with the best validation macro-F1 is kept.
use burn::prelude::*;
use burn::tensor::activation::softmax;
use burn::tensor::TensorData;
use sclm_model::{ClassifierHead, ClassifierHeadConfig, FinetuneRecipe, LabeledCells, RunOptions};
use sclm_nn::burn;
use sclm_nn::loss::cross_entropy;
use sclm_nn::train::{
    DecayKind, FitSummary, LossOutput, OptimizerConfig, Progress, ScheduleConfig, TrainConfig, Trainable, Trainer,
};
use sclm_nn::NnError;

use crate::bert::Bert;
use crate::corpus::tokenize_adata;
use crate::error::{LangCellError, Result};
use crate::family::{for_length_runs, to_vec};
use crate::model::Batch;
use crate::tokenizer::RankValueTokenizer;

/// The cell encoder with a classification head.
#[derive(Module, Debug)]
pub struct LangCellClassifier {
    /// The cell encoder.
    pub cell_bert: Bert,
    /// `Dropout → Linear(hidden → classes)` on `[CLS]`.
    pub head: ClassifierHead,
}

/// Cells and their classes.
#[derive(Debug, Clone)]
pub struct ClassBatch {
    /// Tokens of each cell.
    pub cells: Vec<Vec<u32>>,
    /// Class of each cell.
    pub labels: Vec<i64>,
}

impl LangCellClassifier {
    /// Class logits.
    ///
    /// # Shapes
    /// `cells` of a batch → `[cells, classes]`
    pub fn logits(&self, cells: &Batch) -> Result<Tensor<2>> {
        let h = self.cell_bert.forward(cells.ids.clone(), cells.mask.clone(), None)?;
        let [b, _, d] = h.dims();
        Ok(self.head.forward(h.slice([0..b, 0..1, 0..d]).reshape([b, d])))
    }

    /// Softmax probabilities of token sequences, `cells × classes` row-major, in the order given.
    pub fn probabilities(&self, seqs: &[Vec<u32>], device: &Device) -> Result<Vec<f32>> {
        let k = self.head.n_classes();
        let mut out = vec![0f32; seqs.len() * k];
        for_length_runs(seqs, |idx| {
            let s: Vec<Vec<u32>> = idx.iter().map(|&i| seqs[i].clone()).collect();
            let p = to_vec(softmax(self.logits(&Batch::cells(&s, device)?)?, 1));
            for (r, &i) in idx.iter().enumerate() {
                out[i * k..(i + 1) * k].copy_from_slice(&p[r * k..(r + 1) * k]);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

impl Trainable for LangCellClassifier {
    type Batch = ClassBatch;

    fn loss(&self, b: &ClassBatch) -> std::result::Result<LossOutput, NnError> {
        let device = self.head.linear.weight.device();
        let nn = |e: LangCellError| NnError::Config(e.to_string());
        let logits = self.logits(&Batch::cells(&b.cells, &device).map_err(nn)?).map_err(nn)?;
        let n = b.labels.len();
        let y = Tensor::<1, Int>::from_data(TensorData::new(b.labels.clone(), [n]), &device);
        let ce = cross_entropy(logits, y, 0.0);
        let v = to_vec(ce.clone())[0] as f64;
        Ok(LossOutput::new(ce).with_term("ce", v))
    }
}

/// The published recipe, with the fields of `r` that differ from [`FinetuneRecipe::default`].
/// A `fresh` (not pretrained) model starts at a learning rate of 1e-3 instead of 5e-5: the
/// published rate assumes pretrained weights.
pub fn recipe(r: &FinetuneRecipe, hidden_dropout: f64, fresh: bool) -> FinetuneRecipe {
    let d = FinetuneRecipe::default();
    let pick = |mine: f64, given: f64, default: f64| if given == default { mine } else { given };
    FinetuneRecipe {
        lr: pick(if fresh { 1e-3 } else { 5e-5 }, r.lr, d.lr),
        weight_decay: pick(1e-3, r.weight_decay, d.weight_decay),
        epochs: if r.epochs == d.epochs { 20 } else { r.epochs },
        warmup_epochs: r.warmup_epochs,
        patience: if r.patience == d.patience { 20 } else { r.patience },
        clip_grad_norm: pick(1.0, r.clip_grad_norm, d.clip_grad_norm),
        dropout: pick(hidden_dropout, r.dropout, d.dropout),
        ..r.clone()
    }
}

/// Batches of `size` cells in a seeded order.
fn class_batches(cells: &[Vec<u32>], labels: &[i64], size: usize, seed: u64) -> Vec<ClassBatch> {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut order: Vec<usize> = (0..cells.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    order
        .chunks(size.max(1))
        .map(|c| ClassBatch {
            cells: c.iter().map(|&i| cells[i].clone()).collect(),
            labels: c.iter().map(|&i| labels[i]).collect(),
        })
        .collect()
}

/// Fine-tunes `cell_bert` (on an autodiff device) with a new head for `cells.classes`, per the
/// published recipe (see the module docs); returns the best model by validation macro-F1.
pub fn finetune_classifier(
    cell_bert: Bert,
    genes: &RankValueTokenizer,
    cells: &LabeledCells<'_>,
    r: &FinetuneRecipe,
    fresh: bool,
    run: &RunOptions,
    progress: &mut dyn Progress,
) -> Result<(LangCellClassifier, FitSummary)> {
    let device = cell_bert.embeddings.word_embeddings.weight.device();
    let rc = recipe(r, cell_bert.config().hidden_dropout_prob, fresh);
    sclm_nn::seed_everything(rc.seed, &device);
    let k = cells.classes.len();
    if k < 2 {
        return Err(LangCellError::Input("fine-tuning needs at least two classes".into()));
    }
    let (tokens, _) =
        tokenize_adata(genes, cells.adata, cells.opts.layer.as_deref(), cells.opts.pieces.allow_non_integer)?;
    let pick = |rows: &[usize]| -> (Vec<Vec<u32>>, Vec<i64>) {
        rows.iter()
            .filter_map(|&i| cells.labels.get(i).copied().flatten().map(|l| (tokens[i].clone(), l as i64)))
            .unzip()
    };
    let (tr_c, tr_l) = pick(cells.train);
    let (va_c, va_l) = pick(cells.valid);
    if tr_c.is_empty() {
        return Err(LangCellError::Input("no labelled training cells".into()));
    }
    let head = ClassifierHeadConfig::new(cell_bert.config().hidden_size, k).with_dropout(rc.dropout).init(&device);
    let model = LangCellClassifier { cell_bert, head };
    let batch = 16;
    let train = class_batches(&tr_c, &tr_l, batch, rc.seed);
    let valid = class_batches(&va_c, &va_l, batch, rc.seed ^ 1);
    let total = rc.epochs * train.len();
    let tc = TrainConfig::new(
        OptimizerConfig::new().with_weight_decay(rc.weight_decay).with_clip_grad_norm(Some(rc.clip_grad_norm)),
        ScheduleConfig::new(rc.lr)
            .with_warmup_steps(500.min(total / 10))
            .with_total_steps(Some(total.max(1)))
            .with_decay(DecayKind::Linear)
            .with_min_lr_ratio(0.0),
    )
    .with_seed(rc.seed)
    .with_max_epochs(rc.epochs)
    .with_early_stopping_patience(Some(rc.patience))
    .with_maximize_metric(true);
    let meta = serde_json::json!({ "task": "langcell annotation", "classes": cells.classes, "recipe": serde_json::to_value(&rc).unwrap_or_default() });
    let mut trainer = Trainer::start(model, tc, run.run_dir.as_deref(), run.resume, meta)?;
    let dev = device.clone();
    let metric = move |m: &LangCellClassifier, vb: &[ClassBatch]| -> f64 {
        let (mut y, mut p) = (Vec::new(), Vec::new());
        for b in vb {
            let Ok(pr) = m.probabilities(&b.cells, &dev) else { return 0.0 };
            for (i, &l) in b.labels.iter().enumerate() {
                y.push(l as usize);
                p.push(sclm_model::argmax(&pr[i * k..(i + 1) * k]).0);
            }
        }
        sclm_eval::metrics::f1_macro(&y, &p).unwrap_or(0.0)
    };
    let summary = if valid.is_empty() {
        trainer.fit(&train, &[], progress)?
    } else {
        trainer.fit_with_metric(&train, &valid, Some(&metric), progress)?
    };
    let best = trainer.best_model.take().unwrap_or_else(|| trainer.model.clone());
    Ok((best.valid(), summary))
}
