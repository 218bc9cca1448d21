//! Perturbation prediction (paper §4.5): a control cell enters with the perturbed gene's count
//! removed and the gene marked with expression −100 (the published trick: `−100 · h_gene` added
//! to the embedder's sum), and an MLP decoder predicts the log-normalised expression of a cell
//! under that perturbation (MSE). Unseen perturbations are predicted through their gene's
//! embedding row.
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use sclm_nn::burn;
use sclm_nn::burn::module::Module;
use sclm_nn::burn::prelude::*;
use sclm_nn::burn::tensor::TensorData;
use sclm_nn::embedding::CsrRows;
use sclm_nn::train::{LossOutput, Trainable};

use crate::error::{CellPlmError, Result};
use crate::model::{to_vec, CellPlm};
use crate::pretrain::TrainGroup;

/// Expression value of the marked (perturbed) gene, as published.
pub const MARKER_VALUE: f32 = -100.0;

/// A CellPLM trained to predict perturbation responses (use an `mlp` decoder).
#[derive(Module, Debug)]
pub struct PerturbationModel {
    /// The model.
    pub plm: CellPlm,
}

/// Control cells paired with a condition and the profile of a cell under it.
#[derive(Debug, Clone)]
pub struct PerturbationBatch {
    /// Control cells over the vocabulary, the marked gene's count removed.
    pub input: TrainGroup,
    /// Perturbed gene of each row (`None`: control target).
    pub markers: Vec<Option<u32>>,
    /// Target log-normalised profiles, `rows × genes` row-major.
    pub targets: Vec<f32>,
}

impl PerturbationModel {
    /// Predicted log-normalised profiles of the rows of `batch` (deterministic).
    ///
    /// # Shapes
    /// `rows × genes` → `[rows, genes]`
    pub fn predict(&self, input: &TrainGroup, markers: &[Option<u32>]) -> Result<Tensor<2>> {
        let counts = CsrRows::new(input.n_genes, &input.indptr, &input.indices, &input.data)?;
        self.plm.decode_marked(&counts, input.coords.as_deref(), (markers, MARKER_VALUE), true)
    }
}

impl Trainable for PerturbationModel {
    type Batch = PerturbationBatch;

    fn loss(&self, b: &PerturbationBatch) -> Result<LossOutput, sclm_nn::NnError> {
        let counts = CsrRows::new(b.input.n_genes, &b.input.indptr, &b.input.indices, &b.input.data)?;
        let pred = self
            .plm
            .decode_marked(&counts, b.input.coords.as_deref(), (&b.markers, MARKER_VALUE), false)
            .map_err(sclm_nn::NnError::model)?;
        let [n, g] = pred.dims();
        if b.targets.len() != n * g {
            return Err(sclm_nn::NnError::Shape(format!(
                "perturbation targets: {} values for {n} cells × {g} genes",
                b.targets.len()
            )));
        }
        let target = Tensor::<2>::from_data(TensorData::new(b.targets.clone(), [n, g]), &pred.device());
        let mse = (pred - target).powi_scalar(2).mean();
        let v = to_vec(mse.clone())[0] as f64;
        Ok(LossOutput::new(mse).with_term("mse", v))
    }

    /// The published CellPLM names of the nested model ([`CellPlm::name_table`]).
    fn weight_naming(&self) -> Option<std::sync::Arc<dyn sclm_nn::train::WeightNaming>> {
        crate::weights::as_naming(self.plm.name_table("plm."))
    }
}

/// `log1p(x / Σx · 1e4)` of each row of a vocabulary-space group.
pub fn log_normalized(g: &TrainGroup) -> Vec<f32> {
    let n = g.n_cells();
    let mut out = vec![0f32; n * g.n_genes];
    for r in 0..n {
        let vals = &g.data[g.indptr[r]..g.indptr[r + 1]];
        let total: f32 = vals.iter().sum();
        if total <= 0.0 {
            continue;
        }
        for q in g.indptr[r]..g.indptr[r + 1] {
            out[r * g.n_genes + g.indices[q] as usize] = (g.data[q] / total * 1e4).ln_1p();
        }
    }
    out
}

/// The rows `rows` of `g` with each row's marked gene removed.
pub fn knocked_down(g: &TrainGroup, rows: &[usize], markers: &[Option<u32>]) -> TrainGroup {
    let (mut ptr, mut idx, mut val) = (vec![0usize], Vec::new(), Vec::new());
    for (&r, m) in rows.iter().zip(markers) {
        for q in g.indptr[r]..g.indptr[r + 1] {
            if Some(g.indices[q]) != *m {
                idx.push(g.indices[q]);
                val.push(g.data[q]);
            }
        }
        ptr.push(idx.len());
    }
    TrainGroup {
        indptr: ptr,
        indices: idx,
        data: val,
        n_genes: g.n_genes,
        panel: g.panel.clone(),
        coords: g.coords.as_ref().map(|c| rows.iter().map(|&r| c[r]).collect()),
        batch: None,
        dataset: None,
        cells: rows.iter().map(|&r| g.cells[r]).collect(),
        masking: g.masking,
    }
}

/// Training batches: `n_batches` of `batch_size` random control cells, each paired with a
/// condition drawn from `conditions` (cells of the condition: `members`; `gene`: its vocabulary
/// gene, `None` for control) and the profile of a random member as target.
pub fn pairing_batches(
    all: &TrainGroup,
    controls: &[usize],
    conditions: &[(Option<u32>, Vec<usize>)],
    n_batches: usize,
    batch_size: usize,
    seed: u64,
) -> Result<Vec<PerturbationBatch>> {
    if controls.is_empty() || conditions.is_empty() {
        return Err(CellPlmError::Input("perturbation training needs control cells and conditions".into()));
    }
    let profiles = log_normalized(all);
    let g = all.n_genes;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n_batches);
    for _ in 0..n_batches {
        let rows: Vec<usize> = (0..batch_size).map(|_| *controls.choose(&mut rng).expect("non-empty")).collect();
        let mut markers = Vec::with_capacity(batch_size);
        let mut targets = Vec::with_capacity(batch_size * g);
        for _ in 0..batch_size {
            let (gene, members) = &conditions[rng.random_range(0..conditions.len())];
            let t = members[rng.random_range(0..members.len())];
            markers.push(*gene);
            targets.extend_from_slice(&profiles[t * g..(t + 1) * g]);
        }
        out.push(PerturbationBatch { input: knocked_down(all, &rows, &markers), markers, targets });
    }
    Ok(out)
}

/// Mean predicted profile of the control cells under a perturbation of `gene`.
pub fn predict_mean(
    model: &PerturbationModel,
    all: &TrainGroup,
    controls: &[usize],
    gene: Option<u32>,
    chunk: usize,
) -> Result<Vec<f32>> {
    let g = all.n_genes;
    let mut sum = vec![0f64; g];
    for part in controls.chunks(chunk.max(1)) {
        let markers = vec![gene; part.len()];
        let input = knocked_down(all, part, &markers);
        let p = to_vec(model.predict(&input, &markers)?);
        for r in 0..part.len() {
            for j in 0..g {
                sum[j] += p[r * g + j] as f64;
            }
        }
    }
    Ok(sum.into_iter().map(|v| (v / controls.len().max(1) as f64) as f32).collect())
}

impl PerturbationModel {
    /// Starts the MLP head at `profile` (zero weights, bias = profile): the first prediction is
    /// the control mean (the no-change baseline) and training learns the perturbation effects.
    pub fn with_head_at(mut self, profile: &[f32]) -> Result<Self> {
        let g = self.plm.genes().len();
        if profile.len() != g {
            return Err(CellPlmError::Input(format!("profile of {} genes for a model of {g}", profile.len())));
        }
        let device = self.plm.device();
        match &mut self.plm.decoder.head {
            crate::model::DecoderHead::Mlp(lin) => {
                let [i, o] = lin.weight.dims();
                lin.weight = burn::module::Param::from_tensor(Tensor::zeros([i, o], &device));
                lin.bias = Some(burn::module::Param::from_tensor(Tensor::from_data(
                    TensorData::new(profile.to_vec(), [g]),
                    &device,
                )));
                Ok(self)
            }
            _ => Err(CellPlmError::Config("perturbation prediction needs the mlp decoder".into())),
        }
    }
}
