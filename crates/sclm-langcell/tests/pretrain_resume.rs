//! LangCell pretraining resumes exactly: a 3-epoch run interrupted in its second epoch and
//! resumed (from the checkpoint of epoch 1: model, optimiser, momentum encoder and queue) ends
//! with the same weights as 3 uninterrupted epochs, bit for bit. Own test binary: the backend generator is process-wide.
use sclm_langcell::pretrain::{batches, pretrain, PretrainConfig};
use sclm_langcell::{BertConfig, LangCellConfig};
use sclm_nn::train::{NoProgress, Progress, StepReport};

/// Asks to stop after `at` optimiser steps.
struct StopAt {
    at: usize,
    steps: usize,
}

impl Progress for StopAt {
    fn on_step(&mut self, _b: usize, _n: usize, _r: &StepReport) {
        self.steps += 1;
    }
    fn should_stop(&mut self) -> bool {
        self.steps >= self.at
    }
}

fn tiny() -> LangCellConfig {
    let cell = BertConfig {
        vocab_size: 23,
        hidden_size: 16,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        intermediate_size: 32,
        hidden_act: "relu".into(),
        max_position_embeddings: 16,
        ..Default::default()
    };
    let text = BertConfig {
        vocab_size: 12,
        hidden_size: 16,
        num_hidden_layers: 1,
        num_attention_heads: 2,
        intermediate_size: 32,
        max_position_embeddings: 8,
        type_vocab_size: 0,
        add_cross_attention: true,
        encoder_width: Some(16),
        ..Default::default()
    };
    LangCellConfig { cell, text, proj_dim: 8, temperature: 0.05, max_cell_tokens: 16 }
}

fn weights(m: &mut sclm_langcell::LangCell) -> Vec<f32> {
    m.to_state_dict().unwrap().values().flat_map(|t| t.to_f32_vec()).collect()
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    // 24 cells of 3 classes over 20 genes (tokens 2..21, <cls> = 22), 3 class texts.
    let cells: Vec<Vec<u32>> = (0..24u32)
        .map(|i| std::iter::once(22).chain((0..6).map(|j| 2 + (i % 3) * 6 + (j + i) % 6)).collect())
        .collect();
    let labels: Vec<usize> = (0..24).map(|i| i % 3).collect();
    let texts: Vec<Vec<u32>> = vec![vec![2, 5, 6, 3], vec![2, 7, 8, 9, 3], vec![2, 10, 11, 3]];
    let train = batches(&cells, &labels, &texts, 8, 0);
    let cfg = PretrainConfig {
        epochs: 3,
        batch_size: 8,
        lr: 1e-3,
        warmup_steps: 2,
        queue_size: 12,
        seed: 9,
        ..Default::default()
    };
    let dev = sclm_nn::train_device();
    let run = |dir: Option<&std::path::Path>, resume: bool, progress: &mut dyn Progress| {
        sclm_nn::seed_everything(1, &dev);
        let m = tiny().init(&dev).unwrap();
        pretrain(m, &train, &[], &cfg, dir, resume, progress)
    };
    let mut full = run(None, false, &mut NoProgress).unwrap().0;
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(train.len(), 3, "3 steps per epoch");
    let stopped = run(Some(tmp.path()), false, &mut StopAt { at: 4, steps: 0 });
    assert!(stopped.is_err(), "the run stops when asked");
    assert!(tmp.path().join("checkpoint").join("step_state.json").exists(), "the step state is checkpointed");
    let mut resumed = run(Some(tmp.path()), true, &mut NoProgress).unwrap().0;
    let (a, b) = (weights(&mut full), weights(&mut resumed));
    assert_eq!(a.len(), b.len());
    let differ = a.iter().zip(&b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
    assert_eq!(differ, 0, "{differ} of {} weights differ after resume", a.len());
    // And training moved the weights.
    let mut start = {
        sclm_nn::seed_everything(1, &dev);
        tiny().init(&dev).unwrap()
    };
    assert_ne!(weights(&mut start), a);
}
