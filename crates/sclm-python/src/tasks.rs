//! Training and the task protocols for Python: `sclm.pretrain` and `sclm.finetune.*` call
//! these, which call the same library functions as `sclm pretrain` / `sclm finetune` /
//! `sclm evaluate` with the same defaults (the Python signatures repeat them).
//!
//! Each takes the data as AnnData parts (`data.rs`: an owned copy, since protocols train over
//! their data for many epochs) and returns plain values: reports as JSON text (the Python side
//! makes DataFrames of them), notes, and AnnData parts. Training runs without the GIL; the
//! progress callback is called as `callback(event, done, total, value)` (`"step"`: micro-batch
//! `done` of `total`, the loss; `"epoch"`: epoch `done`, the training loss; `"stage"`: `value`
//! is the stage's name), and Ctrl-C (or an exception in the callback) ends training after the
//! current optimiser step.
use numpy::{IntoPyArray, PyArray1, PyArray2};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;
use sclm_model::{EmbedOptions, FinetuneRecipe, PieceOptions, ReconstructOptions, RunOptions};
use sclm_nn::train::{EpochReport, Progress, StepReport};
use sclm_tasks::ModelChoice;

use crate::data::{anndata_from, anndata_to};
use crate::{detached, family_named, model_err, raise_recorded, task_err, to_numpy, Model};

/// Training progress and Ctrl-C for Python (see the module docs).
struct TrainProgress {
    callback: Option<Py<PyAny>>,
    failure: Option<PyErr>,
}

impl TrainProgress {
    fn new(callback: Option<Py<PyAny>>) -> Self {
        TrainProgress { callback, failure: None }
    }

    fn call(&mut self, event: &str, done: usize, total: usize, value: Py<PyAny>) {
        if self.failure.is_some() {
            return;
        }
        let r = Python::attach(|py| -> PyResult<()> {
            py.check_signals()?;
            if let Some(cb) = &self.callback {
                cb.call1(py, (event, done, total, value))?;
            }
            Ok(())
        });
        if let Err(e) = r {
            self.failure = Some(e);
        }
    }

    fn number(v: f64) -> Py<PyAny> {
        Python::attach(|py| v.into_pyobject(py).map(|o| o.into_any().unbind()).unwrap_or_else(|_| py.None()))
    }

    fn stage(&mut self, s: &str) {
        let v = Python::attach(|py| s.into_pyobject(py).map(|o| o.into_any().unbind()).unwrap_or_else(|_| py.None()));
        self.call("stage", 0, 0, v);
    }

    /// The callback's exception or the KeyboardInterrupt in place of the error it caused.
    fn finish<T>(&mut self, r: PyResult<T>) -> PyResult<T> {
        raise_recorded(&mut self.failure, r)
    }
}

/// Runs a protocol that reports stages as well as training steps, without the GIL: `f` gets
/// the stage callback and the training progress, both served to `progress`.
fn run_staged<T: Send>(
    py: Python<'_>,
    progress: Option<Py<PyAny>>,
    f: impl FnOnce(&mut dyn FnMut(&str), &mut dyn Progress) -> PyResult<T> + Send,
) -> PyResult<T> {
    let mut stage_prog = TrainProgress::new(progress.as_ref().map(|c| c.clone_ref(py)));
    let mut prog = TrainProgress::new(progress);
    let out = detached(py, || f(&mut |s: &str| stage_prog.stage(s), &mut prog));
    stage_prog.finish(prog.finish(out))
}

impl Progress for TrainProgress {
    fn on_step(&mut self, batch: usize, n_batches: usize, report: &StepReport) {
        let v = Self::number(report.loss);
        self.call("step", batch, n_batches, v);
    }
    fn on_epoch(&mut self, report: &EpochReport) {
        let v = Self::number(report.train_loss);
        self.call("epoch", report.epoch + 1, 0, v);
    }
    fn should_stop(&mut self) -> bool {
        self.failure.is_some()
    }
}

/// Reports as JSON text (a list of `MetricsReport` objects).
fn reports_json(r: &[sclm_eval::MetricsReport]) -> PyResult<String> {
    serde_json::to_string(r).map_err(|e| PyRuntimeError::new_err(format!("reports as JSON: {e}")))
}

/// The model of a protocol: the one given, or a fresh model of `family`.
fn choice<'a>(model: Option<&'a Model>, family: &str) -> PyResult<ModelChoice<'a>> {
    if let Some(m) = model {
        return Ok(ModelChoice::Given(m.inner.as_ref()));
    }
    Ok(ModelChoice::Fresh(family_named(family)?))
}

fn train_device() -> sclm_nn::burn::tensor::Device {
    crate::cpu().autodiff()
}

fn cellplm_err(e: sclm_cellplm::CellPlmError) -> PyErr {
    use sclm_cellplm::CellPlmError as E;
    match e {
        E::Model(m) => model_err(m),
        E::Nn(sclm_nn::NnError::Interrupted) => pyo3::exceptions::PyKeyboardInterrupt::new_err("interrupted"),
        E::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            pyo3::exceptions::PyFileNotFoundError::new_err(e.to_string())
        }
        E::Config(_) | E::Input(_) | E::Data(_) | E::Json { .. } => PyValueError::new_err(e.to_string()),
        _ => PyRuntimeError::new_err(e.to_string()),
    }
}

/// Pretrains a model of `family` on `datasets` (`(name, parts)`, names distinct): returns
/// the model, the notes and the per-epoch training losses.
#[pyfunction]
#[pyo3(signature = (datasets, family = "cellplm", config = "small", epochs = 20, lr = 3e-4, weight_decay = 1e-8,
                    mask_node_rate = 0.75, mask_feature_rate = 0.25, drop_node_rate = 0.3, batch_key = "batch",
                    spatial_key = "spatial", max_cells_per_group = 128, seed = 0, run_dir = None, resume = false,
                    progress = None))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn pretrain(
    py: Python<'_>,
    datasets: Vec<(String, Bound<'_, PyDict>)>,
    family: &str,
    config: &str,
    epochs: usize,
    lr: f64,
    weight_decay: f64,
    mask_node_rate: f64,
    mask_feature_rate: f64,
    drop_node_rate: f64,
    batch_key: &str,
    spatial_key: &str,
    max_cells_per_group: usize,
    seed: u64,
    run_dir: Option<std::path::PathBuf>,
    resume: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<(Model, Vec<String>, Vec<f64>)> {
    if family != "cellplm" {
        return Err(pyo3::exceptions::PyNotImplementedError::new_err(format!(
            "pretraining the {family} family is not built yet (pretraining: cellplm)"
        )));
    }
    let data: Vec<(String, sclm_data::AnnData)> =
        datasets.iter().map(|(n, p)| Ok((n.clone(), anndata_from(p)?))).collect::<PyResult<_>>()?;
    let run = sclm_cellplm::PretrainRun {
        config: sclm_cellplm::ConfigChoice::from_name_or_file(config),
        mask_node_rate,
        mask_feature_rate,
        drop_node_rate,
        group_key: batch_key.to_string(),
        spatial_key: spatial_key.to_string(),
        layer: None,
        max_cells_per_group,
        epochs,
        lr,
        weight_decay,
        seed,
        run_dir,
        resume,
    };
    let mut prog = TrainProgress::new(progress);
    let out = detached(py, || {
        let refs: Vec<(String, &sclm_data::AnnData)> = data.iter().map(|(n, a)| (n.clone(), a)).collect();
        sclm_cellplm::pretrain_datasets(&refs, &run, &train_device(), &mut prog).map_err(cellplm_err)
    });
    let out = prog.finish(out)?;
    let losses = out.epochs.iter().map(|e| e.train_loss).collect();
    let mut notes = out.notes.clone();
    notes.extend(out.loss_line());
    Ok((Model { inner: Box::new(out.model) }, notes, losses))
}

/// Pretrains a LangCell model on `datasets` (`(name, parts)` with the label column among the
/// obs parts) whose classes have `texts` (`(label, text)`): returns the model, the notes, the
/// per-epoch training losses and the validation cells' zero-shot `(accuracy, macro-F1)`.
#[pyfunction]
#[pyo3(signature = (datasets, texts, label_key = "cell_type", init = None, text_init = None, max_cell_tokens = 256, stage = 2,
                    epochs = 10, batch_size = 16, lr = 1e-4, warmup_steps = 100, weight_decay = 1e-3,
                    mask_ratio = 0.15, w_mgm = 0.1, w_cc = 0.05, w_ct = 1.0, w_ctm = 1.0, temperature = 0.05,
                    cc_temperature = 0.2, queue_size = 256, momentum = 0.995, valid_fraction = 0.1,
                    allow_non_integer = false, seed = 0, run_dir = None, resume = false, progress = None))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn pretrain_langcell(
    py: Python<'_>,
    datasets: Vec<(String, Bound<'_, PyDict>)>,
    texts: Vec<(String, String)>,
    label_key: &str,
    init: Option<std::path::PathBuf>,
    text_init: Option<std::path::PathBuf>,
    max_cell_tokens: usize,
    stage: u8,
    epochs: usize,
    batch_size: usize,
    lr: f64,
    warmup_steps: usize,
    weight_decay: f64,
    mask_ratio: f64,
    w_mgm: f64,
    w_cc: f64,
    w_ct: f64,
    w_ctm: f64,
    temperature: f64,
    cc_temperature: f64,
    queue_size: usize,
    momentum: f64,
    valid_fraction: f64,
    allow_non_integer: bool,
    seed: u64,
    run_dir: Option<std::path::PathBuf>,
    resume: bool,
    progress: Option<Py<PyAny>>,
) -> PyResult<(Model, Vec<String>, Vec<f64>, Option<(f64, f64)>)> {
    let data: Vec<(String, sclm_data::AnnData)> =
        datasets.iter().map(|(n, p)| Ok((n.clone(), anndata_from(p)?))).collect::<PyResult<_>>()?;
    let run = sclm_langcell::run::PretrainRun {
        init,
        config: None,
        text_init,
        max_cell_tokens,
        label_key: label_key.to_string(),
        layer: None,
        allow_non_integer,
        texts,
        valid_fraction,
        train: sclm_langcell::pretrain::PretrainConfig {
            stage,
            epochs,
            batch_size,
            lr,
            weight_decay,
            warmup_steps,
            mask_ratio,
            w_mgm,
            w_cc,
            w_ct,
            w_ctm,
            temperature,
            cc_temperature,
            queue_size,
            momentum,
            seed,
            ..Default::default()
        },
        run_dir,
        resume,
    };
    let mut prog = TrainProgress::new(progress);
    let mut losses = Vec::new();
    let out = detached(py, || {
        let refs: Vec<(String, &sclm_data::AnnData)> = data.iter().map(|(n, a)| (n.clone(), a)).collect();
        let mut rec = EpochLosses { inner: &mut prog, losses: &mut losses };
        sclm_langcell::run::pretrain_datasets(&refs, &run, &train_device(), &mut rec).map_err(langcell_err)
    });
    let out = prog.finish(out)?;
    Ok((Model { inner: Box::new(out.model) }, out.notes, losses, out.zero_shot_valid))
}

/// Forwards progress and records each epoch's mean training loss.
struct EpochLosses<'a> {
    inner: &'a mut TrainProgress,
    losses: &'a mut Vec<f64>,
}

impl Progress for EpochLosses<'_> {
    fn on_step(&mut self, batch: usize, n_batches: usize, report: &StepReport) {
        self.inner.on_step(batch, n_batches, report);
    }
    fn on_epoch(&mut self, report: &EpochReport) {
        self.losses.push(report.train_loss);
        self.inner.on_epoch(report);
    }
    fn should_stop(&mut self) -> bool {
        self.inner.should_stop()
    }
}

fn langcell_err(e: sclm_langcell::LangCellError) -> PyErr {
    use sclm_langcell::LangCellError as E;
    match e {
        E::Model(m) => model_err(m),
        E::Nn(sclm_nn::NnError::Interrupted) => pyo3::exceptions::PyKeyboardInterrupt::new_err("interrupted"),
        E::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            pyo3::exceptions::PyFileNotFoundError::new_err(e.to_string())
        }
        E::Config(_) | E::Input(_) | E::Parse { .. } | E::Tokenizer { .. } => PyValueError::new_err(e.to_string()),
        _ => PyRuntimeError::new_err(e.to_string()),
    }
}

/// How a protocol reads cells, from the Python keywords.
fn embed_options(batch_key: Option<String>, gene_id_column: Option<String>, allow_non_integer: bool) -> EmbedOptions {
    EmbedOptions {
        group_key: batch_key,
        gene_id_column,
        pieces: PieceOptions { allow_non_integer, ..Default::default() },
        ..Default::default()
    }
}

/// The outcome of [`annotation`]: classifier, reports (JSON), per-cell predictions,
/// probabilities and split (`train`/`valid`/`test`/`excluded`), notes, epochs trained.
type AnnotationResult<'py> = (Model, String, Vec<String>, Bound<'py, PyArray1<f32>>, Vec<String>, Vec<String>, usize);

/// Cell-type annotation: fine-tunes `model` (or a fresh model of `family`) on the labels of
/// `label_key` and scores it on held-out cells next to logistic regression on PCA.
#[pyfunction]
#[pyo3(signature = (parts, label_key, model = None, family = "cellplm", epochs = 300, lr = 5e-3, valid_frac = 0.2,
                    test_frac = 0.2, min_cells_per_class = 3, n_top_genes = 3000, batch_key = None,
                    gene_id_column = None, allow_non_integer = false, run_dir = None, resume = false, seed = 0,
                    progress = None))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn annotation<'py>(
    py: Python<'py>,
    parts: Bound<'py, PyDict>,
    label_key: String,
    model: Option<PyRef<'py, Model>>,
    family: &str,
    epochs: usize,
    lr: f64,
    valid_frac: f64,
    test_frac: f64,
    min_cells_per_class: usize,
    n_top_genes: usize,
    batch_key: Option<String>,
    gene_id_column: Option<String>,
    allow_non_integer: bool,
    run_dir: Option<std::path::PathBuf>,
    resume: bool,
    seed: u64,
    progress: Option<Py<PyAny>>,
) -> PyResult<AnnotationResult<'py>> {
    let adata = anndata_from(&parts)?;
    let choice = choice(model.as_deref(), family)?;
    let opts = sclm_tasks::AnnotationOptions {
        label_key,
        valid_frac,
        test_frac,
        min_cells_per_class,
        recipe: FinetuneRecipe { lr, epochs, seed, ..Default::default() },
        run: RunOptions { run_dir, resume },
        embed: embed_options(batch_key, gene_id_column, allow_non_integer),
        baseline: sclm_tasks::PcaFit { n_top_genes, seed, ..Default::default() },
        fresh_genes: n_top_genes,
        seed,
    };
    let mut prog = TrainProgress::new(progress);
    let out =
        detached(py, || sclm_tasks::annotation(choice, &adata, &opts, &train_device(), &mut prog).map_err(task_err));
    let out = prog.finish(out)?;
    let mut split = vec![String::from("excluded"); adata.n_obs()];
    for (name, rows) in [("train", &out.split.train), ("valid", &out.split.valid), ("test", &out.split.test)] {
        for &r in rows.iter() {
            split[r] = name.to_string();
        }
    }
    let reports = reports_json(&out.reports)?;
    Ok((
        Model { inner: out.classifier },
        reports,
        out.predictions,
        out.probabilities.into_pyarray(py),
        split,
        out.notes,
        out.summary.epochs,
    ))
}

fn reconstruct_options(batch_key: Option<String>, allow_non_integer: bool) -> ReconstructOptions {
    ReconstructOptions { group_key: batch_key, allow_non_integer, ..Default::default() }
}

/// Denoising: hides `hide_frac` of the non-zero counts and scores their reconstruction.
/// Returns the reports (JSON), the evaluated data as parts, the number of hidden entries and
/// the notes.
#[pyfunction]
#[pyo3(signature = (parts, model = None, family = "cellplm", n_top_genes = 3000, hide_frac = 0.1,
                    pretrain_epochs = 10, epochs = 10, lr = None, batch_key = None, allow_non_integer = false,
                    seed = 0, progress = None))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn denoising<'py>(
    py: Python<'py>,
    parts: Bound<'py, PyDict>,
    model: Option<PyRef<'py, Model>>,
    family: &str,
    n_top_genes: usize,
    hide_frac: f64,
    pretrain_epochs: usize,
    epochs: usize,
    lr: Option<f64>,
    batch_key: Option<String>,
    allow_non_integer: bool,
    seed: u64,
    progress: Option<Py<PyAny>>,
) -> PyResult<(String, Bound<'py, PyDict>, usize, Vec<String>)> {
    let adata = anndata_from(&parts)?;
    let choice = choice(model.as_deref(), family)?;
    let opts = sclm_tasks::DenoisingOptions {
        n_top_genes,
        dropout: sclm_eval::protocols::DropoutOptions { rate: hide_frac, ..Default::default() },
        // Read for a fresh model only: a given model reconstructs zero-shot.
        pretrain_epochs,
        finetune_epochs: epochs,
        lr,
        cells: reconstruct_options(batch_key, allow_non_integer),
        seed,
    };
    let out = run_staged(py, progress, |stage, prog| {
        sclm_tasks::denoising(choice, &adata, &opts, &train_device(), stage, prog).map_err(task_err)
    })?;
    Ok((reports_json(&out.reports)?, anndata_to(py, &out.data)?, out.n_hidden, out.notes))
}

/// Spatial imputation: holds out `holdout_frac` of the genes of the spatial data (coordinates
/// in `obsm[spatial_key]`) and imputes them from `reference` (default: half of the spots).
/// Returns the reports (JSON), the query spots as parts (layers `<family>_imputed`,
/// `knn_imputed`; var column `held_out` as strings), the sizes and the notes.
#[pyfunction]
#[pyo3(signature = (parts, reference = None, model = None, family = "cellplm", spatial_key = "spatial",
                    n_top_genes = 1000, holdout_frac = 0.1, epochs = 10, lr = None, batch_key = None, seed = 0,
                    progress = None))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn spatial_imputation<'py>(
    py: Python<'py>,
    parts: Bound<'py, PyDict>,
    reference: Option<Bound<'py, PyDict>>,
    model: Option<PyRef<'py, Model>>,
    family: &str,
    spatial_key: &str,
    n_top_genes: usize,
    holdout_frac: f64,
    epochs: usize,
    lr: Option<f64>,
    batch_key: Option<String>,
    seed: u64,
    progress: Option<Py<PyAny>>,
) -> PyResult<(String, Bound<'py, PyDict>, [usize; 5], Vec<String>)> {
    let spatial = anndata_from(&parts)?;
    let reference = reference.map(|r| anndata_from(&r)).transpose()?;
    let choice = choice(model.as_deref(), family)?;
    let opts = sclm_tasks::SpatialOptions {
        spatial_key: spatial_key.to_string(),
        n_top_genes,
        holdout_frac,
        epochs,
        lr,
        cells: reconstruct_options(batch_key, true),
        seed,
    };
    let out = run_staged(py, progress, |stage, prog| {
        sclm_tasks::spatial_imputation(choice, &spatial, reference.as_ref(), &opts, &train_device(), stage, prog)
            .map_err(task_err)
    })?;
    let d = anndata_to(py, &out.data)?;
    if let Some(c) = out.data.var.get("held_out") {
        let var = PyDict::new(py);
        var.set_item("held_out", c.to_labels())?;
        d.set_item("var", var)?;
    }
    Ok((reports_json(&out.reports)?, d, out.sizes, out.notes))
}

/// Perturbation prediction on GEARS-style conditions with an unseen-perturbation split.
/// Returns the reports (JSON), the train/valid/test conditions, the control cells and notes.
#[pyfunction]
#[pyo3(signature = (parts, model = None, family = "cellplm", perturbation_key = "perturbation", control = None,
                    test_frac = 0.25, valid_frac = 0.1, epochs = 10, lr = None, allow_non_integer = false, seed = 0,
                    progress = None))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn perturbation<'py>(
    py: Python<'py>,
    parts: Bound<'py, PyDict>,
    model: Option<PyRef<'py, Model>>,
    family: &str,
    perturbation_key: &str,
    control: Option<String>,
    test_frac: f64,
    valid_frac: f64,
    epochs: usize,
    lr: Option<f64>,
    allow_non_integer: bool,
    seed: u64,
    progress: Option<Py<PyAny>>,
) -> PyResult<(String, [Vec<String>; 3], usize, Vec<String>)> {
    let adata = anndata_from(&parts)?;
    let choice = choice(model.as_deref(), family)?;
    let opts = sclm_tasks::PerturbationOptions {
        perturbation_key: perturbation_key.to_string(),
        control,
        test_frac,
        valid_frac,
        epochs,
        lr,
        allow_non_integer,
        layer: None,
        seed,
    };
    let out = run_staged(py, progress, |stage, prog| {
        sclm_tasks::perturbation(choice, &adata, &opts, &train_device(), stage, prog).map_err(task_err)
    })?;
    Ok((reports_json(&out.reports)?, out.conditions, out.n_controls, out.notes))
}

/// Embedding quality: the model's embedding and PCA's, clustered and scored against the cell
/// types of `label_key` (and batch mixing over `batch_key`). Returns the reports (JSON), the
/// model's and the baseline's embeddings and the notes.
#[pyfunction]
#[pyo3(signature = (model, parts, label_key, batch_key = None, group_key = None, gene_id_column = None,
                    allow_non_integer = false, n_top_genes = 3000, seed = 0))]
#[allow(clippy::too_many_arguments, clippy::type_complexity)]
fn embedding_quality<'py>(
    py: Python<'py>,
    model: PyRef<'py, Model>,
    parts: Bound<'py, PyDict>,
    label_key: String,
    batch_key: Option<String>,
    group_key: Option<String>,
    gene_id_column: Option<String>,
    allow_non_integer: bool,
    n_top_genes: usize,
    seed: u64,
) -> PyResult<(String, Bound<'py, PyArray2<f32>>, Bound<'py, PyArray2<f32>>, Vec<String>)> {
    let adata = anndata_from(&parts)?;
    let opts = sclm_tasks::EmbeddingOptions {
        label_key,
        batch_key,
        embed: embed_options(group_key, gene_id_column, allow_non_integer),
        baseline: sclm_tasks::PcaFit { n_top_genes, seed, ..Default::default() },
        evaluate: sclm_eval::EvaluateOptions { seed, ..Default::default() },
    };
    let m = &model.inner;
    let out = detached(py, || sclm_tasks::embedding_quality(m.as_ref(), &adata, &opts, &mut |_| {}).map_err(task_err))?;
    Ok((reports_json(&out.reports)?, to_numpy(py, out.embedding)?, to_numpy(py, out.baseline_embedding)?, out.notes))
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(pretrain, m)?)?;
    m.add_function(wrap_pyfunction!(pretrain_langcell, m)?)?;
    m.add_function(wrap_pyfunction!(annotation, m)?)?;
    m.add_function(wrap_pyfunction!(denoising, m)?)?;
    m.add_function(wrap_pyfunction!(spatial_imputation, m)?)?;
    m.add_function(wrap_pyfunction!(perturbation, m)?)?;
    m.add_function(wrap_pyfunction!(embedding_quality, m)?)?;
    Ok(())
}
