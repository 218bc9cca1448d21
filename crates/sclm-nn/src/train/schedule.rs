//! Learning-rate schedules: linear warm-up then constant / linear / cosine decay, and
//! reduce-on-plateau (CellPLM fine-tuning: warm-up then reduce-on-plateau).
use burn::prelude::*;
use serde::{Deserialize, Serialize};

/// Decay after warm-up.
#[derive(Config, Debug, PartialEq, Copy)]
pub enum DecayKind {
    /// Keep the base rate.
    Constant,
    /// Linear decay to `min_lr_ratio · base` at `total_steps`.
    Linear,
    /// Cosine decay to `min_lr_ratio · base` at `total_steps`.
    Cosine,
}

/// Step-based schedule.
#[derive(Config, Debug)]
pub struct ScheduleConfig {
    /// Base learning rate.
    pub base_lr: f64,
    /// Linear warm-up steps from 0 (default 0). The first step uses `base/warmup`.
    #[config(default = 0)]
    pub warmup_steps: usize,
    /// Total steps for decays (default none = constant after warm-up).
    #[config(default = "None")]
    pub total_steps: Option<usize>,
    /// Decay kind (default constant).
    #[config(default = "DecayKind::Constant")]
    pub decay: DecayKind,
    /// Final learning rate as a fraction of the base (default 0).
    #[config(default = 0.0)]
    pub min_lr_ratio: f64,
}

impl ScheduleConfig {
    /// Learning rate of optimiser step `step` (0-based), before any plateau factor.
    pub fn lr_at(&self, step: usize) -> f64 {
        if self.warmup_steps > 0 && step < self.warmup_steps {
            return self.base_lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let total = match (self.decay, self.total_steps) {
            (DecayKind::Constant, _) | (_, None) => return self.base_lr,
            (_, Some(t)) => t,
        };
        let span = total.saturating_sub(self.warmup_steps).max(1) as f64;
        let t = ((step - self.warmup_steps) as f64 / span).min(1.0);
        let min = self.base_lr * self.min_lr_ratio;
        let frac = match self.decay {
            DecayKind::Linear => 1.0 - t,
            DecayKind::Cosine => 0.5 * (1.0 + (std::f64::consts::PI * t).cos()),
            DecayKind::Constant => 1.0,
        };
        min + (self.base_lr - min) * frac
    }
}

/// Configuration of [`ReduceOnPlateau`].
#[derive(Config, Debug)]
pub struct ReduceOnPlateauConfig {
    /// Multiply the rate by this on a plateau (default 0.5).
    #[config(default = 0.5)]
    pub factor: f64,
    /// Epochs without improvement before reducing (default 5).
    #[config(default = 5)]
    pub patience: usize,
    /// Relative improvement that counts (default 1e-4).
    #[config(default = 1e-4)]
    pub threshold: f64,
    /// Whether larger metric values are better (default false: a loss).
    #[config(default = false)]
    pub maximize: bool,
    /// Lower bound of the accumulated factor (default 1e-3).
    #[config(default = 1e-3)]
    pub min_factor: f64,
}

/// Reduce-on-plateau state (serialisable for checkpoints).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReduceOnPlateau {
    /// The configuration values.
    pub factor: f64,
    /// Patience in epochs.
    pub patience: usize,
    /// Relative threshold.
    pub threshold: f64,
    /// Larger is better.
    pub maximize: bool,
    /// Lower bound of `scale`.
    pub min_factor: f64,
    /// Current multiplier of the scheduled rate.
    pub scale: f64,
    /// Best metric so far.
    pub best: Option<f64>,
    /// Epochs since the last improvement.
    pub bad_epochs: usize,
}

impl ReduceOnPlateauConfig {
    /// Fresh state.
    pub fn init(&self) -> ReduceOnPlateau {
        ReduceOnPlateau {
            factor: self.factor,
            patience: self.patience,
            threshold: self.threshold,
            maximize: self.maximize,
            min_factor: self.min_factor,
            scale: 1.0,
            best: None,
            bad_epochs: 0,
        }
    }
}

impl ReduceOnPlateau {
    /// Records an epoch's metric; returns true when the rate was reduced.
    pub fn observe(&mut self, metric: f64) -> bool {
        let improved = match self.best {
            None => true,
            Some(b) if self.maximize => metric > b + self.threshold * b.abs(),
            Some(b) => metric < b - self.threshold * b.abs(),
        };
        if improved {
            self.best = Some(metric);
            self.bad_epochs = 0;
            return false;
        }
        self.bad_epochs += 1;
        if self.bad_epochs > self.patience {
            self.bad_epochs = 0;
            let new = (self.scale * self.factor).max(self.min_factor);
            let reduced = new < self.scale;
            self.scale = new;
            return reduced;
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_decays() {
        let lin =
            ScheduleConfig::new(1.0).with_warmup_steps(4).with_total_steps(Some(14)).with_decay(DecayKind::Linear);
        assert_eq!(lin.lr_at(0), 0.25);
        assert_eq!(lin.lr_at(3), 1.0);
        assert_eq!(lin.lr_at(4), 1.0);
        assert!((lin.lr_at(9) - 0.5).abs() < 1e-12);
        assert_eq!(lin.lr_at(100), 0.0);
        let cos = lin.clone().with_decay(DecayKind::Cosine).with_min_lr_ratio(0.1);
        assert!((cos.lr_at(9) - 0.55).abs() < 1e-12);
        assert!((cos.lr_at(14) - 0.1).abs() < 1e-12);
        let mut plateau = ReduceOnPlateauConfig::new().with_patience(1).init();
        assert!(!plateau.observe(1.0));
        assert!(!plateau.observe(1.0));
        assert!(plateau.observe(1.0));
        assert_eq!(plateau.scale, 0.5);
        assert!(!plateau.observe(0.5));
    }
}
