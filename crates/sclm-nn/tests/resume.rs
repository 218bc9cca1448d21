//! Resume from a checkpoint continues to the same parameters as an uninterrupted run. Lives in
//! its own test binary: flex's random generator is process-wide, so concurrently running tests
//! drawing random numbers would perturb the dropout masks.
use sclm_nn::burn;
use sclm_nn::burn::module::{Module, ModuleVisitor, Param};
use sclm_nn::burn::nn::{Dropout, DropoutConfig, Linear, LinearConfig};
use sclm_nn::burn::prelude::*;
use sclm_nn::burn::tensor::Distribution;
use sclm_nn::loss::masked_mse;
use sclm_nn::train::{
    LossOutput, NoProgress, OptimizerConfig, ParamGroupConfig, ReduceOnPlateauConfig, ScheduleConfig, TrainConfig,
    Trainable, Trainer,
};

#[derive(Module, Debug)]
struct Net {
    embedder: Linear,
    body: Linear,
    drop: Dropout,
}

struct Batch {
    x: Tensor<2>,
    y: Tensor<2>,
}

impl Trainable for Net {
    type Batch = Batch;
    fn loss(&self, b: &Batch) -> Result<LossOutput, sclm_nn::NnError> {
        let h = self.drop.forward(self.embedder.forward(b.x.clone()).tanh());
        let mse = masked_mse(self.body.forward(h), b.y.clone(), None);
        let v = mse.clone().into_scalar::<f32>() as f64;
        Ok(LossOutput::new(mse).with_term("mse", v))
    }
}

fn params(m: &Net) -> Vec<f32> {
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

fn net(dev: &Device) -> Net {
    Net {
        embedder: LinearConfig::new(6, 16).init(dev),
        body: LinearConfig::new(16, 3).init(dev),
        drop: DropoutConfig::new(0.3).init(),
    }
}

#[test]
fn resume_continues_identically_and_writes_run_files() {
    let dev = sclm_nn::train_device();
    sclm_nn::seed_everything(5, &dev);
    let data: Vec<Batch> = (0..6)
        .map(|_| Batch {
            x: Tensor::random([8, 6], Distribution::Normal(0.0, 1.0), &dev),
            y: Tensor::random([8, 3], Distribution::Normal(0.0, 1.0), &dev),
        })
        .collect();
    let (train, valid) = data.split_at(5);
    let opt = OptimizerConfig::new()
        .with_groups(vec![ParamGroupConfig::new("embedder".into(), vec!["embedder".into()]).with_lr_scale(0.1)])
        .with_clip_grad_norm(Some(1.0));
    let cfg = TrainConfig::new(opt, ScheduleConfig::new(1e-2).with_warmup_steps(3))
        .with_seed(11)
        .with_max_epochs(4)
        .with_accumulation_steps(2)
        .with_plateau(Some(ReduceOnPlateauConfig::new().with_patience(0)));
    let init = net(&dev);
    // Uninterrupted.
    let mut a = Trainer::new(init.clone(), cfg.clone());
    a.fit(train, valid, &mut NoProgress).unwrap();
    // Interrupted after 2 epochs, then resumed from disk into a freshly initialised model.
    let dir = tempfile::tempdir().unwrap();
    let mut b = Trainer::new(init, cfg.clone().with_max_epochs(2))
        .with_run_dir(dir.path(), serde_json::json!({"name": "net"}))
        .unwrap();
    b.fit(train, valid, &mut NoProgress).unwrap();
    let ckpt = dir.path().join("checkpoint");
    for f in [
        "config.json",
        "model.safetensors",
        "param_ids.json",
        "train_state.json",
        "optimizer.default.bpk",
        "optimizer.embedder.bpk",
    ] {
        assert!(ckpt.join(f).exists(), "{f}");
    }
    let mut c = Trainer::resume(net(&dev), cfg.clone(), &ckpt).unwrap();
    assert_eq!(c.state().epoch, 2);
    c.fit(train, valid, &mut NoProgress).unwrap();
    assert_eq!(c.state(), a.state());
    let (pa, pc) = (params(&a.model), params(&c.model));
    assert_eq!(pa, pc, "resumed parameters differ");
    // The log has one line per step and per epoch of the interrupted part.
    let log = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.iter().filter(|v| v["event"] == "epoch").count(), 2);
    assert_eq!(lines.iter().filter(|v| v["event"] == "step").count(), 6);
    assert!(lines[0]["mse"].as_f64().is_some());
    assert!(dir.path().join("best/model.safetensors").exists());
    let cfg_json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg_json["model"]["name"], "net");

    // Resuming the run directory itself: as if the process died during epoch 2, after logging
    // a step. The best model comes back, the stale step record goes, and the run ends where the
    // uninterrupted one did.
    // A checkpoint of another architecture is refused, not half-loaded.
    let wider = Net {
        embedder: LinearConfig::new(6, 16).init(&dev),
        body: LinearConfig::new(16, 4).init(&dev),
        drop: DropoutConfig::new(0.3).init(),
    };
    let err = Trainer::resume(wider, cfg.clone(), &ckpt).err().unwrap();
    assert!(err.to_string().contains("model.safetensors") && err.to_string().contains("body.weight"), "{err}");
    let empty = tempfile::tempdir().unwrap();
    let err = Trainer::resume_run(net(&dev), cfg.clone(), empty.path(), serde_json::Value::Null).err().unwrap();
    assert!(err.to_string().contains("no checkpoint to resume from"), "{err}");
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join("log.jsonl")).unwrap();
        writeln!(f, "{}", serde_json::json!({"event": "step", "epoch": 2, "step": 99, "loss": 1.0})).unwrap();
    }
    let mut d = Trainer::resume_run(net(&dev), cfg, dir.path(), serde_json::json!({"name": "net"})).unwrap();
    assert!(d.best_model.is_some(), "best model not restored");
    d.fit(train, valid, &mut NoProgress).unwrap();
    assert_eq!(d.state(), a.state());
    assert_eq!(params(&d.model), pa, "resumed run parameters differ");
    assert_eq!(params(d.best_model.as_ref().unwrap()), params(a.best_model.as_ref().unwrap()), "best model differs");
    let log = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = log.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let epochs: Vec<u64> =
        lines.iter().filter(|v| v["event"] == "epoch").map(|v| v["epoch"].as_u64().unwrap()).collect();
    assert_eq!(epochs, vec![0, 1, 2, 3]);
    assert_eq!(lines.iter().filter(|v| v["event"] == "step").count(), 12);
    assert!(lines.iter().all(|v| v["step"] != 99), "stale record kept");
}
