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
    fn loss(&self, b: &Batch) -> LossOutput {
        let [n, l] = b.ids.dims();
        let device = b.ids.device();
        let pe = sinusoidal_pe_1d(&(0..l).map(|p| p as f32).collect::<Vec<_>>(), 32, &device);
        let x = self.embedder.forward(b.ids.clone()) + pe.reshape([1, l, 32]);
        let logits = self.head.forward(self.encoder.forward(x, None)).reshape([n * l, VOCAB]);
        let ce = cross_entropy(logits, b.targets.clone(), 0.0);
        let v = crate::util::scalar(ce.clone());
        LossOutput::new(ce).with_term("ce", v)
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
    let final_valid = trainer.validate(&valid);
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
    let report = trainer.step(&[&train[0]]);
    assert!(report.grad_norm > 1e-3);
    assert_eq!(to_vec(before.embedder.weight.val()), to_vec(trainer.model.embedder.weight.val()));
    assert_ne!(to_vec(before.head.weight.val()), to_vec(trainer.model.head.weight.val()));
    // Clipping: the clipped gradients have global norm ≤ max.
    let out = trainer.model.loss(&train[0]);
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
    let (ga, la, _) = t.accumulate_grads(&[&small[0], &small[1]]);
    let (gb, lb, _) = t.accumulate_grads(&[&big]);
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
        (m.forward(tensor_from(a, [k, 12], &dev)), m.forward(tensor_from(b, [k, 12], &dev)))
    };
    let cfg = dac::DacConfig::new(5).with_temperature(0.1);
    let out = dac::dac_contrastive_grads(&mlp, &rows, &cfg, embed);
    // End to end.
    let (h, hp) = embed(&mlp, &rows);
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
