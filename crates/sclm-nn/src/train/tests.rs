use super::*;
use crate::attention::AttentionKind;
use crate::embedding::{sinusoidal_pe_1d, EmbeddingTable, EmbeddingTableConfig};
use crate::encoder::{Encoder, EncoderConfig, EncoderLayerConfig};
use crate::loss::cross_entropy;
use crate::util::{tensor_from, to_vec};
use burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use burn::tensor::Distribution;
use rand::Rng;

const VOCAB: usize = 6;
const LEN: usize = 5;

/// A tiny transformer: every position must output the token found at position 0.
#[derive(Module, Debug)]
struct Tiny {
    embedder: EmbeddingTable,
    encoder: Encoder,
    head: Linear,
}

struct Batch {
    ids: Tensor<2, Int>,
    targets: Tensor<1, Int>,
}

fn tiny(device: &Device, dropout: f64) -> Tiny {
    Tiny {
        embedder: EmbeddingTableConfig::new(VOCAB, 32).init(device),
        encoder: EncoderConfig::new(
            EncoderLayerConfig::new(32, 4, 64).with_dropout(dropout).with_attention(AttentionKind::Softmax),
            1,
        )
        .with_final_norm(true)
        .init(device),
        head: LinearConfig::new(32, VOCAB).init(device),
    }
}

impl Trainable for Tiny {
    type Batch = Batch;
    fn loss(&self, b: &Batch) -> Result<LossOutput, NnError> {
        let [n, l] = b.ids.dims();
        let device = b.ids.device();
        let pe = sinusoidal_pe_1d(&(0..l).map(|p| p as f32).collect::<Vec<_>>(), 32, &device);
        let x = self.embedder.forward(b.ids.clone()) + pe.reshape([1, l, 32]);
        let logits = self.head.forward(self.encoder.forward(x, None)).reshape([n * l, VOCAB]);
        let ce = cross_entropy(logits, b.targets.clone(), 0.0);
        let v = crate::util::scalar(ce.clone());
        Ok(LossOutput::new(ce).with_term("ce", v))
    }
}

fn batches(n_batches: usize, size: usize, seed: u64, device: &Device) -> Vec<Batch> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n_batches)
        .map(|_| {
            let mut ids = Vec::new();
            let mut targets = Vec::new();
            for _ in 0..size {
                let row: Vec<i64> = (0..LEN).map(|_| rng.random_range(0..VOCAB as i64)).collect();
                targets.extend(std::iter::repeat_n(row[0], LEN));
                ids.extend(row);
            }
            Batch {
                ids: Tensor::from_data(TensorData::new(ids, [size, LEN]), device),
                targets: Tensor::from_data(TensorData::new(targets, [size * LEN]), device),
            }
        })
        .collect()
}

fn config(lr: f64, epochs: usize) -> TrainConfig {
    TrainConfig::new(OptimizerConfig::new().with_weight_decay(0.0), ScheduleConfig::new(lr).with_warmup_steps(5))
        .with_max_epochs(epochs)
}

#[test]
fn tiny_transformer_learns_synthetic_task() {
    let dev = crate::train_device();
    crate::seed_everything(3, &dev);
    let train = batches(8, 32, 1, &dev);
    let valid = batches(2, 32, 2, &dev);
    let mut trainer = Trainer::new(tiny(&dev, 0.0), config(3e-3, 25));
    let summary = trainer.fit(&train, &valid, &mut NoProgress).unwrap();
    let final_valid = trainer.validate(&valid).unwrap();
    assert!(final_valid < 0.05, "validation loss {final_valid}");
    assert_eq!(summary.steps, 25 * 8);
}

#[test]
fn groups_use_their_own_learning_rate_and_clipping_bounds_the_norm() {
    let dev = crate::train_device();
    let train = batches(1, 8, 7, &dev);
    let model = tiny(&dev, 0.0);
    let before = model.clone();
    let opt = OptimizerConfig::new()
        .with_groups(vec![ParamGroupConfig::new("embedder".into(), vec!["embedder".into()]).with_lr_scale(0.0)])
        .with_clip_grad_norm(Some(1e-3));
    let mut trainer = Trainer::new(model, TrainConfig::new(opt, ScheduleConfig::new(1e-2)));
    let report = trainer.step(&[&train[0]]).unwrap();
    assert!(report.grad_norm > 1e-3);
    assert_eq!(to_vec(before.embedder.weight.val()), to_vec(trainer.model.embedder.weight.val()));
    assert_ne!(to_vec(before.head.weight.val()), to_vec(trainer.model.head.weight.val()));
    // Clipping: the clipped gradients have global norm ≤ max.
    let out = trainer.model.loss(&train[0]).unwrap();
    let mut grads = GradientsParams::from_grads(out.total.backward(), &trainer.model);
    let norm = optim::clip_grad_norm(&trainer.model, &mut grads, 0.5);
    assert!(norm > 0.5);
    assert!((optim::grad_global_norm(&trainer.model, &grads) - 0.5).abs() < 1e-3);
    let paths: Vec<String> = optim::param_paths(&trainer.model).into_iter().map(|(p, _)| p).collect();
    assert!(paths.contains(&"encoder.layers.0.self_attn.query_projection.weight".to_string()), "{paths:?}");
}

#[test]
fn accumulation_equals_one_big_batch() {
    let dev = crate::train_device();
    let small = batches(2, 4, 8, &dev);
    let ids = Tensor::cat(vec![small[0].ids.clone(), small[1].ids.clone()], 0);
    let targets = Tensor::cat(vec![small[0].targets.clone(), small[1].targets.clone()], 0);
    let big = Batch { ids, targets };
    let mut t = Trainer::new(tiny(&dev, 0.0), config(1e-3, 1));
    let (ga, la, _) = t.accumulate_grads(&[&small[0], &small[1]]).unwrap();
    let (gb, lb, _) = t.accumulate_grads(&[&big]).unwrap();
    assert!((la - lb).abs() < 1e-6);
    let id = t.model.head.weight.id;
    let (a, b) = (to_vec(ga.get::<2>(id).unwrap()), to_vec(gb.get::<2>(id).unwrap()));
    let scale = b.iter().map(|v| v.abs()).fold(0f32, f32::max);
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(scale > 0.0 && diff / scale < 1e-5, "{diff} / {scale}");
}

#[test]
fn early_stopping_stops_when_validation_stalls() {
    let dev = crate::train_device();
    let train = batches(1, 4, 9, &dev);
    let valid = batches(1, 4, 10, &dev);
    // Learning rate 0: the metric never improves after the first epoch.
    let cfg = config(0.0, 20).with_early_stopping_patience(Some(3));
    let mut t = Trainer::new(tiny(&dev, 0.0), cfg);
    let s = t.fit(&train, &valid, &mut NoProgress).unwrap();
    assert!(s.stopped_early);
    assert_eq!(s.epochs, 4);
    assert_eq!(s.best.map(|b| b.1), Some(0));
}

/// A small encoder for the contrastive tests: MLP with dropout.
#[derive(Module, Debug)]
struct Mlp {
    a: Linear,
    b: Linear,
    drop: Dropout,
}

impl Mlp {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        self.b.forward(self.drop.forward(burn::tensor::activation::relu(self.a.forward(x))))
    }
}

#[test]
fn divide_and_conquer_gradients_equal_end_to_end() {
    let dev = crate::train_device();
    let mlp = Mlp {
        a: LinearConfig::new(12, 24).init(&dev),
        b: LinearConfig::new(24, 8).init(&dev),
        drop: DropoutConfig::new(0.0).init(),
    };
    let n = 24;
    let x = to_vec(Tensor::<2>::random([n, 12], Distribution::Normal(0.0, 1.0), &dev));
    let noise = to_vec(Tensor::<2>::random([n, 12], Distribution::Normal(0.0, 0.1), &dev));
    let rows: Vec<(Vec<f32>, Vec<f32>)> =
        (0..n).map(|i| (x[i * 12..(i + 1) * 12].to_vec(), noise[i * 12..(i + 1) * 12].to_vec())).collect();
    let embed = |m: &Mlp, chunk: &[(Vec<f32>, Vec<f32>)]| {
        let k = chunk.len();
        let a: Vec<f32> = chunk.iter().flat_map(|r| r.0.clone()).collect();
        let b: Vec<f32> =
            chunk.iter().flat_map(|r| r.0.iter().zip(&r.1).map(|(u, v)| u + v).collect::<Vec<_>>()).collect();
        Ok((m.forward(tensor_from(a, [k, 12], &dev)), m.forward(tensor_from(b, [k, 12], &dev))))
    };
    let cfg = dac::DacConfig::new(5).with_temperature(0.1);
    let out = dac::dac_contrastive_grads(&mlp, &rows, &cfg, embed).unwrap();
    // End to end.
    let (h, hp) = embed(&mlp, &rows).unwrap();
    let loss = crate::loss::info_nce(h, hp, 0.1, false);
    assert!((crate::util::scalar(loss.clone()) - out.loss).abs() < 1e-5);
    let e2e = GradientsParams::from_grads(loss.backward(), &mlp);
    for (name, id) in [("a.weight", mlp.a.weight.id), ("b.weight", mlp.b.weight.id)] {
        let g1 = to_vec(out.grads.get::<2>(id).unwrap());
        let g2 = to_vec(e2e.get::<2>(id).unwrap());
        let scale = g2.iter().map(|v| v.abs()).fold(0f32, f32::max);
        let diff = g1.iter().zip(&g2).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(scale > 0.0);
        assert!(diff / scale < 1e-5, "{name}: relative difference {}", diff / scale);
    }
}

/// A family's own error, as a loss would return it.
#[derive(Debug, thiserror::Error)]
#[error("group 3 has no cells")]
struct EmptyGroup;

#[derive(Module, Debug)]
struct Fails {
    lin: Linear,
}

impl Trainable for Fails {
    /// `None` stands for a batch the model refuses.
    type Batch = Option<Tensor<2>>;
    fn loss(&self, b: &Option<Tensor<2>>) -> Result<LossOutput, NnError> {
        let x = b.as_ref().ok_or_else(|| NnError::model(EmptyGroup))?;
        Ok(LossOutput::new(self.lin.forward(x.clone()).powi_scalar(2).mean()))
    }
}

#[test]
fn a_failing_loss_ends_fit_with_its_error() {
    let dev = crate::train_device();
    let x = tensor_from((0..12).map(|v| v as f32 / 12.0).collect(), [3, 4], &dev);
    let train = vec![Some(x.clone()), Some(x), None];
    let dir = tempfile::tempdir().unwrap();
    let model = Fails { lin: LinearConfig::new(4, 2).init(&dev) };
    let mut t = Trainer::new(model, config(1e-3, 3).with_shuffle(false))
        .with_run_dir(dir.path(), serde_json::Value::Null)
        .unwrap();
    let err = t.fit(&train, &[], &mut NoProgress).unwrap_err();
    assert_eq!(err.to_string(), "group 3 has no cells");
    assert!(matches!(&err, NnError::Model(e) if e.downcast_ref::<EmptyGroup>().is_some()), "{err:?}");
    // The two good batches were stepped, the failed epoch left no checkpoint behind.
    assert_eq!((t.state().step, t.state().epoch), (2, 0));
    assert!(!dir.path().join("checkpoint").exists());
    // Validation goes through the same loss and fails the same way.
    let err = t.validate(&[None]).unwrap_err();
    assert!(matches!(err, NnError::Model(_)));
}

type Row = (Vec<f32>, Vec<f32>);

/// Rows of `n` inputs and their noise (host generator: no draws from the shared backend one).
fn contrastive_rows(n: usize, seed: u64) -> Vec<Row> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let normal = rand_distr::Normal::new(0f32, 1.0).unwrap();
    (0..n)
        .map(|_| {
            let x: Vec<f32> = (0..12).map(|_| rng.sample(normal)).collect();
            let e: Vec<f32> = (0..12).map(|_| 0.1 * rng.sample(normal)).collect();
            (x, e)
        })
        .collect()
}

/// The two views of a chunk: the input and the input plus its noise.
fn embed_rows(m: &Mlp, chunk: &[Row]) -> Result<(Tensor<2>, Tensor<2>), NnError> {
    let dev = m.a.weight.device();
    let k = chunk.len();
    let a: Vec<f32> = chunk.iter().flat_map(|r| r.0.clone()).collect();
    let b: Vec<f32> = chunk.iter().flat_map(|r| r.0.iter().zip(&r.1).map(|(u, v)| u + v).collect::<Vec<_>>()).collect();
    Ok((m.forward(tensor_from(a, [k, 12], &dev)), m.forward(tensor_from(b, [k, 12], &dev))))
}

/// The plain full-batch contrastive loss, as a `Trainable`.
impl Trainable for Mlp {
    type Batch = Vec<Row>;
    fn loss(&self, b: &Vec<Row>) -> Result<LossOutput, NnError> {
        let (h, hp) = embed_rows(self, b)?;
        Ok(LossOutput::new(crate::loss::info_nce(h, hp, 0.1, false)))
    }
}

fn params_of<M: Module>(m: &M) -> Vec<f32> {
    use burn::store::ModuleSnapshot;
    m.collect(None, None, true)
        .into_iter()
        .flat_map(|t| burn::store::bridge::into_data(t).unwrap().convert::<f32>().try_to_vec::<f32>().unwrap())
        .collect()
}

#[test]
fn divide_and_conquer_step_through_the_trainer_equals_the_full_batch_step_and_trains() {
    let dev = crate::train_device();
    let mlp = Mlp {
        a: LinearConfig::new(12, 24).init(&dev),
        b: LinearConfig::new(24, 8).init(&dev),
        drop: DropoutConfig::new(0.0).init(),
    };
    let batch = contrastive_rows(40, 21);
    let cfg = config(1e-3, 1);
    let dac_step = || dac::DacStep::new(dac::DacConfig::new(7).with_temperature(0.1), embed_rows);
    let mut plain = Trainer::new(mlp.clone(), cfg.clone());
    let mut chunked = Trainer::with_step(mlp.clone(), dac_step(), cfg.clone());
    let (g1, l1, _) = plain.accumulate_grads(&[&batch]).unwrap();
    let (g2, l2, terms) = chunked.accumulate_grads(&[&batch]).unwrap();
    assert!((l1 - l2).abs() < 1e-5, "{l1} vs {l2}");
    assert_eq!(terms.len(), 1);
    for id in [mlp.a.weight.id, mlp.b.weight.id] {
        let (a, b) = (to_vec(g1.get::<2>(id).unwrap()), to_vec(g2.get::<2>(id).unwrap()));
        let scale = a.iter().map(|v| v.abs()).fold(0f32, f32::max);
        let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
        assert!(scale > 0.0 && diff / scale < 1e-5, "{diff} / {scale}");
    }
    // One optimiser step each.
    let r1 = plain.step(&[&batch]).unwrap();
    let r2 = chunked.step(&[&batch]).unwrap();
    assert!((r1.grad_norm - r2.grad_norm).abs() < 1e-5 * r1.grad_norm);
    let (p1, p2) = (params_of(&plain.model), params_of(&chunked.model));
    assert_eq!(p1.len(), p2.len());
    assert_ne!(p1, params_of(&mlp));
    let diff = p1.iter().zip(&p2).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(diff < 1e-5, "parameters differ by {diff}");

    // And it trains: the epoch loss falls; validation uses the step's full-batch loss.
    struct Epochs(Vec<EpochReport>);
    impl Progress for Epochs {
        fn on_epoch(&mut self, r: &EpochReport) {
            self.0.push(r.clone());
        }
    }
    let train: Vec<Vec<Row>> = (0..4).map(|i| contrastive_rows(32, 100 + i)).collect();
    let valid = vec![contrastive_rows(32, 200)];
    let mut t = Trainer::with_step(mlp, dac_step(), config(1e-2, 6).with_seed(4));
    let mut epochs = Epochs(Vec::new());
    t.fit(&train, &valid, &mut epochs).unwrap();
    let losses: Vec<f64> = epochs.0.iter().map(|r| r.train_loss).collect();
    assert!(losses[5] < 0.8 * losses[0], "{losses:?}");
    let (v0, v5) = (epochs.0[0].valid_metric.unwrap(), epochs.0[5].valid_metric.unwrap());
    assert!(v5 < v0, "validation {v0} → {v5}");
}

/// A model whose weights are published under other names, the first layer's weight in
/// PyTorch's `[out, in]` layout.
#[derive(Module, Debug)]
struct Renamed {
    enc: Linear,
    head: Linear,
}

fn renamed_table() -> NameTable {
    let e = |m: &str, p: &str, t: bool| NameEntry { module_path: m.into(), published: p.into(), transposed: t };
    NameTable::new([
        e("enc.weight", "encoder.0.weight", true),
        e("enc.bias", "encoder.0.bias", false),
        e("head.weight", "classifier.weight", false),
    ])
    .unwrap()
}

impl Trainable for Renamed {
    type Batch = (Tensor<2>, Tensor<2>);
    fn loss(&self, b: &(Tensor<2>, Tensor<2>)) -> Result<LossOutput, NnError> {
        let y = self.head.forward(self.enc.forward(b.0.clone()).tanh());
        Ok(LossOutput::new(crate::loss::masked_mse(y, b.1.clone(), None)))
    }
    fn weight_naming(&self) -> Option<Arc<dyn WeightNaming>> {
        Some(Arc::new(renamed_table()))
    }
}

#[test]
fn checkpoints_and_best_use_the_published_names_and_resume_through_them() {
    use burn::store::ModuleStore;
    let dev = crate::train_device();
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let mut t2 =
        |r: usize, c: usize| tensor_from((0..r * c).map(|_| rng.random_range(-1.0f32..1.0)).collect(), [r, c], &dev);
    let train: Vec<(Tensor<2>, Tensor<2>)> = (0..3).map(|_| (t2(6, 4), t2(6, 2))).collect();
    let valid = vec![(t2(6, 4), t2(6, 2))];
    let fresh =
        |dev: &Device| Renamed { enc: LinearConfig::new(4, 5).init(dev), head: LinearConfig::new(5, 2).init(dev) };
    let init = fresh(&dev);
    let cfg = config(1e-2, 4);
    let mut a = Trainer::new(init.clone(), cfg.clone());
    a.fit(&train, &valid, &mut NoProgress).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut b =
        Trainer::start(init, cfg.clone().with_max_epochs(2), Some(dir.path()), false, serde_json::Value::Null).unwrap();
    b.fit(&train, &valid, &mut NoProgress).unwrap();
    for sub in ["checkpoint", "best"] {
        let path = dir.path().join(sub).join("model.safetensors");
        let mut store = burn::store::SafetensorsStore::from_file(&path);
        let stored = store.get_all_tensors().unwrap();
        let mut keys: Vec<&String> = stored.keys().collect();
        keys.sort();
        assert_eq!(keys, ["classifier.weight", "encoder.0.bias", "encoder.0.weight", "head.bias"], "{sub}");
        // Transposed: `[out, in]`.
        assert_eq!(stored["encoder.0.weight"].shape.as_slice(), [5, 4]);
        assert_eq!(stored["classifier.weight"].shape.as_slice(), [5, 2]);
    }
    // Read back through the table: the same values; without it, nothing matches.
    let best = dir.path().join("best/model.safetensors");
    let naming: Arc<dyn WeightNaming> = Arc::new(renamed_table());
    let (loaded, report) = load_model_named(fresh(&dev), &best, Some(&naming)).unwrap();
    assert!(report.missing.is_empty() && report.unused.is_empty(), "{report:?}");
    assert_eq!(params_of(&loaded), params_of(b.best_model.as_ref().unwrap()));
    let (_, report) = load_model(fresh(&dev), &best).unwrap();
    assert_eq!(report.missing.len(), 3, "{report:?}");
    // Resume reads the named checkpoint and ends where the uninterrupted run did.
    let mut c = Trainer::start(fresh(&dev), cfg, Some(dir.path()), true, serde_json::Value::Null).unwrap();
    c.fit(&train, &valid, &mut NoProgress).unwrap();
    assert_eq!(c.state(), a.state());
    assert_eq!(params_of(&c.model), params_of(&a.model));
    assert_eq!(params_of(c.best_model.as_ref().unwrap()), params_of(a.best_model.as_ref().unwrap()));
}
