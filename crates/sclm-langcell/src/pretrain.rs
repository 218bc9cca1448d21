//! LangCell pretraining (paper §3.3), both stages, as one [`TrainStep`] of the engine's trainer
//! (so runs log, checkpoint and resume exactly like every other sclm run).
//!
//! - **MGM** (masked gene modelling): `mask_ratio` of each cell's gene tokens (never `<cls>`)
//!   are hidden, BERT-style (80 % `<mask>`, 10 % a random gene, 10 % kept), and a linear head on
//!   the cell encoder's states predicts the original token (cross-entropy over the cell
//!   vocabulary). The head is a training-only part (the published cell encoder has none).
//! - **C-C** (cell-cell contrast, SimCSE with a momentum encoder): the online cell embedding of
//!   a cell (one dropout pass) must match the momentum encoder's embedding of the same cell
//!   (another dropout pass) among the batch and a queue of `queue_size` past momentum keys.
//! - **C-T** (stage 2, cell-text contrast): symmetric InfoNCE as in ALBEF, online cell
//!   embeddings against momentum text embeddings and online text embeddings against momentum
//!   cell embeddings, in the batch. Cells of one class share one text, so targets are uniform
//!   over every pair of the same class (identity targets would push a cell away from its own
//!   class text carried by another cell).
//! - **CTM** (stage 2, cell-text matching): every (cell, its text) pair is a positive; for
//!   each cell one text of another class and for each text one cell of another class are drawn
//!   with probability ∝ softmax of their similarity (hard negatives mined as in ALBEF/BLIP);
//!   the multimodal text encoder with `ctm_head` classifies match / no match.
//!
//! Total = `w_mgm·MGM + w_cc·C-C + w_ct·C-T + w_ctm·CTM` (stage 1: the first two). The paper
//! gives neither loss weights nor mask ratio nor queue size. Our defaults: mask ratio 0.15
//! (BERT and Geneformer), queue 256, momentum 0.995 (ALBEF), C-T temperature 0.05 (the
//! published zero-shot temperature), and weights w_ct = w_ctm = 1, w_mgm = 0.1, w_cc = 0.05 with
//! a C-C temperature of 0.2 (MoCo v2). Measured, not guessed (tests/pretrain.rs): a fresh model
//! with all weights 1 and C-C at 0.05 never leaves the collapsed start (every cell embedding
//! alike, C-T at its uniform value ln(batch)) within hundreds of steps, since MGM's large
//! gradient reshapes the shared encoder and instance-level C-C repels the cells of one type
//! that C-T gathers around their text; with these weights all four losses fall and zero-shot
//! annotation of held-out cells works. The paper starts from Geneformer, where the cells are
//! already apart; raise `w_mgm`/`w_cc` there if wanted. AdamW with warm-up then linear decay,
//! weight decay 1e-3 (paper).
//! Random draws (masks, hard negatives) come from the step's seed, so resume is exact.
use std::path::Path;
use std::sync::Arc;

use burn::module::Module;
use burn::module::Param;
use burn::nn::{LayerNorm, LayerNormConfig, Linear};
use burn::optim::GradientsParams;
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::TensorData;
use rand::{Rng, SeedableRng};
use sclm_nn::burn;
use sclm_nn::loss::cross_entropy;
use sclm_nn::train::momentum::{ema_copy, ema_update, EmbeddingQueue};
use sclm_nn::train::{
    DecayKind, FitSummary, LossOutput, LossReport, OptimizerConfig, Progress, ScheduleConfig, StepContext, StepState,
    TrainConfig, TrainStep, Trainer, WeightNaming,
};
use sclm_nn::NnError;
use serde::{Deserialize, Serialize};

use crate::error::{LangCellError, Result};
use crate::family::to_vec;
use crate::model::{Batch, LangCell};
use crate::tokenizer::{FIRST_GENE_TOKEN, MASK_TOKEN};

/// Pretraining settings. Defaults as documented in the module docs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PretrainConfig {
    /// 1: MGM + C-C; 2: all four losses (default 2).
    #[serde(default = "d_stage")]
    pub stage: u8,
    /// Passes over the data (default 10).
    #[serde(default = "d_epochs")]
    pub epochs: usize,
    /// Cells per optimiser step (default 16).
    #[serde(default = "d_batch")]
    pub batch_size: usize,
    /// Peak learning rate (default 1e-4 for a fresh model; the paper's 1e-5 continues a
    /// pretrained one).
    #[serde(default = "d_lr")]
    pub lr: f64,
    /// AdamW weight decay (default 1e-3, paper).
    #[serde(default = "d_wd")]
    pub weight_decay: f64,
    /// Linear warm-up steps (default 100; the paper warms up over 1,000 on its corpus).
    #[serde(default = "d_warmup")]
    pub warmup_steps: usize,
    /// Fraction of gene tokens masked for MGM (default 0.15).
    #[serde(default = "d_mask")]
    pub mask_ratio: f64,
    /// Weight of MGM (default 0.1; see the module docs).
    #[serde(default = "d_w_mgm")]
    pub w_mgm: f64,
    /// Weight of cell-cell contrast (default 0.05; see the module docs).
    #[serde(default = "d_w_cc")]
    pub w_cc: f64,
    /// Weight of cell-text contrast (default 1).
    #[serde(default = "d_one")]
    pub w_ct: f64,
    /// Weight of cell-text matching (default 1).
    #[serde(default = "d_one")]
    pub w_ctm: f64,
    /// Temperature of cell-text contrast (default 0.05, the published zero-shot temperature).
    #[serde(default = "d_temp")]
    pub temperature: f64,
    /// Temperature of cell-cell contrast (default 0.2, MoCo v2's: a softer repulsion between
    /// cells, which C-T asks to gather around their class text).
    #[serde(default = "d_cc_temp")]
    pub cc_temperature: f64,
    /// Momentum keys kept as extra C-C negatives (default 256).
    #[serde(default = "d_queue")]
    pub queue_size: usize,
    /// EMA momentum of the momentum encoder (default 0.995).
    #[serde(default = "d_momentum")]
    pub momentum: f64,
    /// Clip gradients to this global norm (default 1).
    #[serde(default = "d_clip")]
    pub clip_grad_norm: f64,
    /// Seed of everything random.
    #[serde(default)]
    pub seed: u64,
}

fn d_stage() -> u8 {
    2
}
fn d_epochs() -> usize {
    10
}
fn d_batch() -> usize {
    16
}
fn d_lr() -> f64 {
    1e-4
}
fn d_wd() -> f64 {
    1e-3
}
fn d_warmup() -> usize {
    100
}
fn d_mask() -> f64 {
    0.15
}
fn d_one() -> f64 {
    1.0
}
fn d_w_mgm() -> f64 {
    0.1
}
fn d_w_cc() -> f64 {
    0.05
}
fn d_temp() -> f64 {
    0.05
}
fn d_cc_temp() -> f64 {
    0.2
}
fn d_queue() -> usize {
    256
}
fn d_momentum() -> f64 {
    0.995
}
fn d_clip() -> f64 {
    1.0
}

impl Default for PretrainConfig {
    fn default() -> Self {
        serde_json::from_str("{}").unwrap_or_else(|_| unreachable!("every field has a default"))
    }
}

impl PretrainConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(LangCellError::Config(m));
        if !(self.stage == 1 || self.stage == 2) {
            return bad(format!("stage {} (1 or 2)", self.stage));
        }
        if self.batch_size < 2 {
            return bad("batch_size must be at least 2 (contrast needs negatives)".into());
        }
        if !(self.mask_ratio > 0.0 && self.mask_ratio < 1.0) {
            return bad(format!("mask_ratio {} not in (0, 1)", self.mask_ratio));
        }
        let positive = |v: f64| v > 0.0 && v.is_finite();
        let ok = positive(self.temperature)
            && positive(self.cc_temperature)
            && positive(self.lr)
            && (0.0..1.0).contains(&self.momentum);
        if !ok {
            return bad("temperature and lr must be positive, momentum in [0, 1)".into());
        }
        for w in [self.w_mgm, self.w_cc, self.w_ct, self.w_ctm] {
            if !(w >= 0.0 && w.is_finite()) {
                return bad(format!("loss weight {w} must be finite and non-negative"));
            }
        }
        Ok(())
    }

    fn train_config(&self, steps_per_epoch: usize) -> TrainConfig {
        let total = self.epochs * steps_per_epoch.max(1);
        TrainConfig::new(
            OptimizerConfig::new().with_weight_decay(self.weight_decay).with_clip_grad_norm(Some(self.clip_grad_norm)),
            ScheduleConfig::new(self.lr)
                .with_warmup_steps(self.warmup_steps.min(total / 2))
                .with_total_steps(Some(total))
                .with_decay(DecayKind::Linear)
                .with_min_lr_ratio(0.0),
        )
        .with_seed(self.seed)
        .with_max_epochs(self.epochs)
    }
}

/// The module trained: the model and the MGM head, BERT's masked-LM head as Geneformer
/// pretrains with (`BertForMaskedLM`: dense, activation, LayerNorm, then a decoder tied to the
/// cell encoder's token embedding plus a bias).
#[derive(Module, Debug)]
pub struct PretrainModel {
    /// The LangCell model.
    pub lc: LangCell,
    /// MGM transform `hidden → hidden`.
    pub mgm_dense: Linear,
    /// MGM LayerNorm.
    pub mgm_norm: LayerNorm,
    /// MGM decoder bias (one per cell token).
    pub mgm_bias: Param<Tensor<1>>,
}

impl PretrainModel {
    /// Wraps `lc` with a fresh MGM head.
    pub fn new(lc: LangCell, device: &Device) -> Self {
        let c = &lc.config().cell;
        PretrainModel {
            mgm_dense: crate::bert::bert_linear(c, c.hidden_size, c.hidden_size, device),
            mgm_norm: LayerNormConfig::new(c.hidden_size).with_epsilon(c.layer_norm_eps).init(device),
            mgm_bias: Param::from_tensor(Tensor::zeros([c.vocab_size], device)),
            lc,
        }
    }

    /// MGM logits of cell states.
    ///
    /// # Shapes
    /// `[m, hidden]` → `[m, cell_vocab]`
    fn mgm_logits(&self, h: Tensor<2>) -> Result<Tensor<2>> {
        let act = self.lc.config().cell.activation()?;
        let x = self.mgm_norm.forward(act.apply(self.mgm_dense.forward(h)));
        let e = self.lc.cell_bert.embeddings.word_embeddings.weight.val();
        let v = e.dims()[0];
        Ok(x.matmul(e.transpose()) + self.mgm_bias.val().reshape([1, v]))
    }
}

/// One batch of cells with their class texts.
#[derive(Debug, Clone)]
pub struct PretrainBatch {
    /// Rank-value tokens of each cell (`<cls>` first).
    pub cells: Vec<Vec<u32>>,
    /// The text tokens of each cell's class.
    pub texts: Vec<Vec<u32>>,
    /// Class index of each cell.
    pub labels: Vec<usize>,
}

/// The pretraining step (see the module docs).
pub struct LangCellStep {
    cfg: PretrainConfig,
    ema: LangCell,
    queue: EmbeddingQueue,
    pending: Vec<Tensor<2>>,
    updates: u64,
}

fn int1(v: Vec<i64>, device: &Device) -> Tensor<1, Int> {
    let n = v.len();
    Tensor::from_data(TensorData::new(v, [n]), device)
}

fn nn_err(e: LangCellError) -> NnError {
    NnError::Config(e.to_string())
}

/// Masked copies of `cells` (BERT 80/10/10) with the flat positions (`row · len + col` in the
/// padded batch) and original tokens of every masked entry.
fn mask_cells(cells: &[Vec<u32>], ratio: f64, n_genes: u32, seed: u64) -> (Vec<Vec<u32>>, Vec<i64>, Vec<i64>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let len = cells.iter().map(Vec::len).max().unwrap_or(0);
    let (mut pos, mut orig) = (Vec::new(), Vec::new());
    let masked = cells
        .iter()
        .enumerate()
        .map(|(r, c)| {
            let mut m = c.clone();
            let mut any = false;
            for (j, t) in m.iter_mut().enumerate().skip(1) {
                if rng.random::<f64>() < ratio {
                    any = true;
                    pos.push((r * len + j) as i64);
                    orig.push(*t as i64);
                    let u: f64 = rng.random();
                    if u < 0.8 {
                        *t = MASK_TOKEN;
                    } else if u < 0.9 {
                        *t = FIRST_GENE_TOKEN + rng.random_range(0..n_genes);
                    }
                }
            }
            // Every cell with a gene contributes at least one masked token.
            if !any && m.len() > 1 {
                let j = rng.random_range(1..m.len());
                pos.push((r * len + j) as i64);
                orig.push(m[j] as i64);
                m[j] = MASK_TOKEN;
            }
            m
        })
        .collect();
    (masked, pos, orig)
}

/// Cross-entropy with soft targets `y` (rows summing to 1).
///
/// # Shapes
/// `logits`, `y`: `[n, m]` → `[1]`
fn soft_ce(logits: Tensor<2>, y: Tensor<2>) -> Tensor<1> {
    let n = logits.dims()[0];
    (log_softmax(logits, 1) * y).sum().neg().div_scalar(n as f64)
}

/// Draws an index with probability ∝ `exp(s)` among `cands` (none → `None`).
fn draw(rng: &mut rand::rngs::StdRng, s: &[f32], cands: &[usize]) -> Option<usize> {
    if cands.is_empty() {
        return None;
    }
    let mx = cands.iter().map(|&j| s[j]).fold(f32::MIN, f32::max);
    let w: Vec<f64> = cands.iter().map(|&j| ((s[j] - mx) as f64).exp()).collect();
    let total: f64 = w.iter().sum();
    let mut u = rng.random::<f64>() * total;
    for (k, &wk) in w.iter().enumerate() {
        if u < wk {
            return Some(cands[k]);
        }
        u -= wk;
    }
    cands.last().copied()
}

impl LangCellStep {
    /// A step for `model` (its momentum copy starts equal to it).
    pub fn new(model: &PretrainModel, cfg: &PretrainConfig, device: &Device) -> Result<Self> {
        cfg.validate()?;
        let d = model.lc.config().proj_dim;
        Ok(LangCellStep {
            cfg: cfg.clone(),
            ema: ema_copy(&model.lc),
            queue: EmbeddingQueue::new(cfg.queue_size.max(1), d, device)?,
            pending: Vec::new(),
            updates: 0,
        })
    }

    /// The losses of one batch; `keys` receives the momentum cell keys (queued after the step).
    fn losses(
        &self,
        model: &PretrainModel,
        ema: &LangCell,
        b: &PretrainBatch,
        seed: u64,
        keys: &mut Option<Tensor<2>>,
    ) -> std::result::Result<LossOutput, NnError> {
        let lc = &model.lc;
        let device = model.mgm_dense.weight.device();
        let n = b.cells.len();
        let n_genes = (lc.config().cell.vocab_size - FIRST_GENE_TOKEN as usize - 1) as u32;
        let t = self.cfg.temperature;
        // MGM.
        let (masked, pos, orig) = mask_cells(&b.cells, self.cfg.mask_ratio, n_genes, seed);
        let mb = Batch::cells(&masked, &device).map_err(nn_err)?;
        let h = lc.cell_bert.forward(mb.ids.clone(), mb.mask.clone(), None).map_err(nn_err)?;
        let [_, len, hd] = h.dims();
        let picked = h.reshape([n * len, hd]).select(0, int1(pos, &device));
        let mgm = cross_entropy(model.mgm_logits(picked).map_err(nn_err)?, int1(orig, &device), 0.0);
        // C-C: online view against momentum view of the same cells, plus the queue.
        let cb = Batch::cells(&b.cells, &device).map_err(nn_err)?;
        let (states, q) = lc.encode_cells(&cb).map_err(nn_err)?;
        let (_, k) = ema.encode_cells(&cb).map_err(nn_err)?;
        let k = k.detach();
        *keys = Some(k.clone());
        let negatives = match self.queue.embeddings() {
            Some(qk) => Tensor::cat(vec![k.clone(), qk.to_device(&device)], 0),
            None => k.clone(),
        };
        let ids: Vec<i64> = (0..n as i64).collect();
        let cc = cross_entropy(
            q.clone().matmul(negatives.transpose()).div_scalar(self.cfg.cc_temperature),
            int1(ids, &device),
            0.0,
        );
        let mut total = mgm.clone().mul_scalar(self.cfg.w_mgm) + cc.clone().mul_scalar(self.cfg.w_cc);
        let mut out_terms = vec![("mgm".to_string(), scalar(&mgm)), ("cc".to_string(), scalar(&cc))];
        if self.cfg.stage == 2 {
            // C-T: online vs momentum, both directions, multi-positive targets.
            let tb = Batch::new(&b.texts, 0, &device).map_err(nn_err)?;
            let te = lc.encode_texts(&tb).map_err(nn_err)?;
            let tk = ema.encode_texts(&tb).map_err(nn_err)?.detach();
            let mut y = vec![0f32; n * n];
            for i in 0..n {
                let same: Vec<usize> = (0..n).filter(|&j| b.labels[j] == b.labels[i]).collect();
                for &j in &same {
                    y[i * n + j] = 1.0 / same.len() as f32;
                }
            }
            let y = Tensor::<2>::from_data(TensorData::new(y, [n, n]), &device);
            let i2t = q.clone().matmul(tk.transpose()).div_scalar(t);
            let t2i = te.clone().matmul(k.clone().transpose()).div_scalar(t);
            let ct = (soft_ce(i2t, y.clone()) + soft_ce(t2i, y)).div_scalar(2.0);
            // CTM with similarity-mined hard negatives.
            let sim = to_vec(softmax(q.clone().detach().matmul(te.clone().detach().transpose()).div_scalar(t), 1));
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0xC7A0_5EED);
            let (mut cell_rows, mut text_rows, mut target) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..n {
                cell_rows.push(i);
                text_rows.push(i);
                target.push(1i64);
            }
            for i in 0..n {
                let other: Vec<usize> = (0..n).filter(|&j| b.labels[j] != b.labels[i]).collect();
                // A text of another class for cell i.
                if let Some(j) = draw(&mut rng, &sim[i * n..(i + 1) * n], &other) {
                    cell_rows.push(i);
                    text_rows.push(j);
                    target.push(0);
                }
                // A cell of another class for text i (column i of the similarities).
                let col: Vec<f32> = (0..n).map(|r| sim[r * n + i]).collect();
                if let Some(j) = draw(&mut rng, &col, &other) {
                    cell_rows.push(j);
                    text_rows.push(i);
                    target.push(0);
                }
            }
            let sel = int1(cell_rows.iter().map(|&r| r as i64).collect(), &device);
            let st = states.select(0, sel.clone());
            let sm = cb.mask.clone().map(|m| m.select(0, sel));
            let texts: Vec<Vec<u32>> = text_rows.iter().map(|&j| b.texts[j].clone()).collect();
            let pairs = Batch::new(&texts, 0, &device).map_err(nn_err)?;
            let logits = lc.match_logits(&pairs, st, sm).map_err(nn_err)?;
            let ctm = cross_entropy(logits, int1(target, &device), 0.0);
            total = total + ct.clone().mul_scalar(self.cfg.w_ct) + ctm.clone().mul_scalar(self.cfg.w_ctm);
            out_terms.push(("ct".into(), scalar(&ct)));
            out_terms.push(("ctm".into(), scalar(&ctm)));
        }
        let mut out = LossOutput::new(total);
        out.terms = out_terms;
        Ok(out)
    }
}

fn scalar(t: &Tensor<1>) -> f64 {
    to_vec(t.clone())[0] as f64
}

impl TrainStep<PretrainModel> for LangCellStep {
    type Batch = PretrainBatch;

    fn grads(
        &mut self,
        model: &PretrainModel,
        batch: &PretrainBatch,
        ctx: &StepContext,
    ) -> std::result::Result<(GradientsParams, LossReport), NnError> {
        let mut keys = None;
        let ema = self.ema.clone();
        let out = self.losses(model, &ema, batch, ctx.seed, &mut keys)?;
        if let Some(k) = keys {
            self.pending.push(k);
        }
        Ok(out.backward(model))
    }

    fn valid_loss(&self, model: &PretrainModel, batch: &PretrainBatch) -> std::result::Result<f64, NnError> {
        let mut keys = None;
        let out = self.losses(model, &self.ema.clone().valid(), batch, 0x5eed, &mut keys)?;
        Ok(scalar(&out.total))
    }

    fn after_optimizer_step(&mut self, model: &PretrainModel, _ctx: &StepContext) -> std::result::Result<(), NnError> {
        self.ema = ema_update(self.ema.clone(), &model.lc, self.cfg.momentum)?;
        for k in self.pending.drain(..) {
            self.queue.push(k)?;
        }
        self.updates += 1;
        Ok(())
    }

    fn state(&self) -> std::result::Result<Option<StepState>, NnError> {
        let s = StepState::new(serde_json::json!({ "updates": self.updates })).with_module("ema", &self.ema)?;
        Ok(Some(self.queue.save_into("queue", s)))
    }

    fn load_state(&mut self, state: StepState) -> std::result::Result<(), NnError> {
        self.ema = state.load_module("ema", self.ema.clone())?;
        self.queue.load_from("queue", &state)?;
        self.updates = state.meta["updates"].as_u64().ok_or_else(|| NnError::Config("step state: updates".into()))?;
        Ok(())
    }

    fn weight_naming(&self, _model: &PretrainModel) -> Option<Arc<dyn WeightNaming>> {
        None
    }
}

/// Splits `n` cells (with their labels) into batches of `size` in a seeded random order; a
/// last batch smaller than 2 is merged into the one before.
pub fn batches(
    cells: &[Vec<u32>],
    labels: &[usize],
    class_texts: &[Vec<u32>],
    size: usize,
    seed: u64,
) -> Vec<PretrainBatch> {
    use rand::seq::SliceRandom;
    let mut order: Vec<usize> = (0..cells.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
    let mut chunks: Vec<Vec<usize>> = order.chunks(size.max(2)).map(|c| c.to_vec()).collect();
    if chunks.len() > 1 && chunks.last().is_some_and(|c| c.len() < 2) {
        let last = chunks.pop().unwrap_or_default();
        if let Some(prev) = chunks.last_mut() {
            prev.extend(last);
        }
    }
    chunks
        .into_iter()
        .map(|idx| PretrainBatch {
            cells: idx.iter().map(|&i| cells[i].clone()).collect(),
            texts: idx.iter().map(|&i| class_texts[labels[i]].clone()).collect(),
            labels: idx.iter().map(|&i| labels[i]).collect(),
        })
        .collect()
}

/// Pretrains `model` (on an autodiff device) on `train` batches, validating on `valid` (mean
/// total loss; the best epoch's model is returned). With `run_dir`, writes `log.jsonl` and a
/// checkpoint after every epoch; `resume` continues from it exactly.
pub fn pretrain(
    model: LangCell,
    train: &[PretrainBatch],
    valid: &[PretrainBatch],
    cfg: &PretrainConfig,
    run_dir: Option<&Path>,
    resume: bool,
    progress: &mut dyn Progress,
) -> Result<(LangCell, FitSummary)> {
    cfg.validate()?;
    if train.is_empty() {
        return Err(LangCellError::Input("no training cells".into()));
    }
    let device = model.cell_proj.weight.device();
    sclm_nn::seed_everything(cfg.seed, &device);
    let pm = PretrainModel::new(model, &device);
    let step = LangCellStep::new(&pm, cfg, &device)?;
    let tc = cfg.train_config(train.len());
    let meta = serde_json::json!({ "langcell": serde_json::to_value(pm.lc.config()).unwrap_or_default(),
                                   "pretrain": serde_json::to_value(cfg).unwrap_or_default() });
    let mut trainer = Trainer::start_with_step(pm, step, tc, run_dir, resume, meta)?;
    let summary = trainer.fit(train, valid, progress)?;
    let best = trainer.best_model.take().unwrap_or_else(|| trainer.model.clone());
    Ok((best.lc.valid(), summary))
}
