//! A momentum-encoder step (MoCo-style: an EMA copy of the model and a queue of past keys)
//! trained through the `Trainer` resumes exactly: model, EMA weights and queue after 2 epochs +
//! resume for 2 equal those of 4 uninterrupted epochs, bit for bit. Own test binary: the
//! backend generator is process-wide.
use sclm_nn::burn;
use sclm_nn::burn::module::{Module, ModuleVisitor, Param};
use sclm_nn::burn::nn::{Linear, LinearConfig};
use sclm_nn::burn::optim::GradientsParams;
use sclm_nn::burn::prelude::*;
use sclm_nn::burn::tensor::TensorData;
use sclm_nn::loss::cross_entropy;
use sclm_nn::train::momentum::{ema_copy, ema_update, EmbeddingQueue};
use sclm_nn::train::{
    LossOutput, LossReport, NoProgress, OptimizerConfig, ScheduleConfig, StepContext, StepState, TrainConfig,
    TrainStep, Trainer,
};
use sclm_nn::NnError;

const IN: usize = 5;
const DIM: usize = 3;
const QUEUE: usize = 10;

#[derive(Module, Debug)]
struct Enc {
    lin: Linear,
}

/// Two views of the same cells.
struct Views {
    q: Tensor<2>,
    k: Tensor<2>,
}

struct Moco {
    ema: Enc,
    queue: EmbeddingQueue,
    /// Keys of the current step's micro-batches, queued after the update.
    pending: Vec<Tensor<2>>,
    momentum: f64,
    updates: u64,
}

impl Moco {
    fn new(model: &Enc, device: &Device) -> Self {
        Self {
            ema: ema_copy(model),
            queue: EmbeddingQueue::new(QUEUE, DIM, device).unwrap(),
            pending: Vec::new(),
            momentum: 0.9,
            updates: 0,
        }
    }

    /// InfoNCE of the queries against their keys, the other keys of the batch and the queue.
    fn loss(q: Tensor<2>, k: Tensor<2>, queue: Option<Tensor<2>>) -> LossOutput {
        let n = q.dims()[0];
        let dev = q.device();
        let keys = match queue {
            Some(neg) => Tensor::cat(vec![k, neg.to_device(&dev)], 0),
            None => k,
        };
        let logits = q.matmul(keys.transpose()).div_scalar(0.2);
        let targets = Tensor::<1, Int>::from_data(TensorData::new((0..n as i64).collect::<Vec<_>>(), [n]), &dev);
        let ce = cross_entropy(logits, targets, 0.0);
        let v = ce.clone().into_scalar::<f32>() as f64;
        LossOutput::new(ce).with_term("info_nce", v)
    }
}

fn normalize(x: Tensor<2>) -> Tensor<2> {
    let norm = x.clone().powi_scalar(2).sum_dim(1).sqrt().add_scalar(1e-6);
    x / norm
}

impl TrainStep<Enc> for Moco {
    type Batch = Views;

    fn grads(&mut self, model: &Enc, b: &Views, _ctx: &StepContext) -> Result<(GradientsParams, LossReport), NnError> {
        let q = normalize(model.lin.forward(b.q.clone()));
        let k = normalize(self.ema.lin.forward(b.k.clone())).detach();
        self.pending.push(k.clone());
        let (grads, report) = Self::loss(q, k, self.queue.embeddings()).backward(model);
        Ok((grads, report.with_term("queue_len", self.queue.len() as f64)))
    }

    fn valid_loss(&self, model: &Enc, b: &Views) -> Result<f64, NnError> {
        let q = normalize(model.lin.forward(b.q.clone()));
        let k = normalize(self.ema.valid().lin.forward(b.k.clone()));
        let out = Self::loss(q, k, self.queue.embeddings());
        Ok(out.total.into_scalar::<f32>() as f64)
    }

    fn after_optimizer_step(&mut self, model: &Enc, _ctx: &StepContext) -> Result<(), NnError> {
        self.ema = ema_update(self.ema.clone(), model, self.momentum)?;
        for k in self.pending.drain(..) {
            self.queue.push(k)?;
        }
        self.updates += 1;
        Ok(())
    }

    fn state(&self) -> Result<Option<StepState>, NnError> {
        let s = StepState::new(serde_json::json!({ "updates": self.updates })).with_module("ema", &self.ema)?;
        Ok(Some(self.queue.save_into("queue", s)))
    }

    fn load_state(&mut self, state: StepState) -> Result<(), NnError> {
        self.ema = state.load_module("ema", self.ema.clone())?;
        self.queue.load_from("queue", &state)?;
        self.updates = state.meta["updates"].as_u64().ok_or_else(|| NnError::Config("updates".into()))?;
        Ok(())
    }
}

fn params<M: Module>(m: &M) -> Vec<f32> {
    struct V(Vec<f32>);
    impl ModuleVisitor for V {
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<D>>) {
            self.0.extend(p.val().into_data().convert::<f32>().try_to_vec::<f32>().unwrap());
        }
    }
    let mut v = V(Vec::new());
    m.visit(&mut v);
    v.0
}

fn queue_of(step: &Moco) -> (usize, Vec<f32>) {
    let rows = step.queue.embeddings().map(|t| t.into_data().convert::<f32>().try_to_vec::<f32>().unwrap());
    (step.queue.len(), rows.unwrap_or_default())
}

fn views(n_batches: usize, size: usize, seed: u64, dev: &Device) -> Vec<Views> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n_batches)
        .map(|_| {
            let x: Vec<f32> = (0..size * IN).map(|_| rng.random_range(-1.0f32..1.0)).collect();
            let y: Vec<f32> = x.iter().map(|v| v + rng.random_range(-0.1f32..0.1)).collect();
            Views {
                q: Tensor::from_data(TensorData::new(x, [size, IN]), dev),
                k: Tensor::from_data(TensorData::new(y, [size, IN]), dev),
            }
        })
        .collect()
}

#[test]
fn momentum_encoder_step_resumes_bit_for_bit() {
    let dev = sclm_nn::train_device();
    sclm_nn::seed_everything(9, &dev);
    let train = views(6, 4, 1, &dev);
    let valid = views(1, 4, 2, &dev);
    let cfg = TrainConfig::new(OptimizerConfig::new(), ScheduleConfig::new(5e-2).with_warmup_steps(2))
        .with_seed(3)
        .with_max_epochs(4)
        .with_accumulation_steps(2);
    let init = Enc { lin: LinearConfig::new(IN, DIM).init(&dev) };
    let model_config = serde_json::json!({"name": "moco"});

    // Uninterrupted: 4 epochs of 3 steps, each queueing 2 × 4 keys (the queue wraps).
    let mut a = Trainer::with_step(init.clone(), Moco::new(&init, &dev), cfg.clone());
    a.fit(&train, &valid, &mut NoProgress).unwrap();
    assert_eq!(a.train_step().updates, 12);
    assert_eq!(a.train_step().queue.len(), QUEUE);
    assert_ne!(params(&a.train_step().ema), params(&init), "EMA never moved");

    // Interrupted after 2 epochs, then resumed from the run directory into a fresh model and a
    // fresh step (another EMA start, an empty queue).
    let dir = tempfile::tempdir().unwrap();
    let mut b = Trainer::start_with_step(
        init.clone(),
        Moco::new(&init, &dev),
        cfg.clone().with_max_epochs(2),
        Some(dir.path()),
        false,
        model_config.clone(),
    )
    .unwrap();
    b.fit(&train, &valid, &mut NoProgress).unwrap();
    let ckpt = dir.path().join("checkpoint");
    for f in ["step_state.json", "step_state.bpk", "model.safetensors", "train_state.json"] {
        assert!(ckpt.join(f).exists(), "{f}");
    }
    let fresh = Enc { lin: LinearConfig::new(IN, DIM).init(&dev) };
    let step = Moco::new(&fresh, &dev);
    let mut c = Trainer::start_with_step(fresh, step, cfg.clone(), Some(dir.path()), true, model_config).unwrap();
    assert_eq!(c.state().epoch, 2);
    assert_eq!(c.train_step().updates, 6);
    c.fit(&train, &valid, &mut NoProgress).unwrap();

    assert_eq!(c.state(), a.state());
    assert_eq!(params(&c.model), params(&a.model), "model differs");
    assert_eq!(params(&c.train_step().ema), params(&a.train_step().ema), "EMA weights differ");
    assert_eq!(queue_of(c.train_step()), queue_of(a.train_step()), "queue differs");
    assert_eq!(c.train_step().updates, a.train_step().updates);
    assert_eq!(params(c.best_model.as_ref().unwrap()), params(a.best_model.as_ref().unwrap()), "best model differs");
    // One log, as if never interrupted, with the step's terms.
    let log = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().filter(|v| v["event"] == "epoch").count(), 4);
    assert_eq!(lines.iter().filter(|v| v["event"] == "step").count(), 12);
    assert!(lines[0]["info_nce"].as_f64().is_some() && lines[0]["queue_len"] == 0.0);

    // A checkpoint without step state (as a plain loss step writes) is refused by this step.
    std::fs::remove_file(ckpt.join("step_state.json")).unwrap();
    let err = Trainer::resume_with_step(init.clone(), Moco::new(&init, &dev), cfg, &ckpt).err().unwrap();
    assert!(err.to_string().contains("holds no step state"), "{err}");
}
