//! `sclm._sclm`: the native module under the Python package `sclm` (python/sclm).
//!
//! An edge over the model and task layers, as the CLI is: it sees only buffers and plain
//! values (the Python package takes an AnnData apart and puts the results back), calls the same
//! library functions as `sclm embed` / `sclm finetune`, and holds no logic of its own beyond
//! the conversion. Count matrices are borrowed without a copy ([`matrix`]); results come back
//! as NumPy arrays that take over the Rust buffers. Compute runs with the GIL released; a
//! progress callback (tqdm-compatible) and Ctrl-C are served after each forward call; errors
//! become Python exceptions with the library's one-line message, and a bug (a Rust panic)
//! becomes a `RuntimeError`, never a crash.
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;

use numpy::{IntoPyArray, PyArray1, PyArray2, PyReadonlyArray2};
use pyo3::exceptions::{
    PyFileNotFoundError, PyKeyboardInterrupt, PyNotImplementedError, PyOSError, PyRuntimeError, PyValueError,
};
use pyo3::prelude::*;
use sclm_data::{Column, DataFrame, Dense};
use sclm_model::{CellModel, GeneMapping, ModelError, PieceOptions};

mod data;
mod matrix;
mod tasks;

use matrix::MatrixArg;

/// The families built into this module (the same list as the CLI's).
pub(crate) fn families() -> [&'static dyn sclm_model::Family; 2] {
    [&sclm_cellplm::FAMILY, &sclm_langcell::FAMILY]
}

/// The built-in family named `name`, or a `ValueError` listing the known ones.
pub(crate) fn family_named(name: &str) -> PyResult<&'static dyn sclm_model::Family> {
    families().into_iter().find(|f| f.name() == name).ok_or_else(|| {
        PyValueError::new_err(format!(
            "unknown family '{name}' (known: {})",
            families().iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// `r`, or in place of its error the exception recorded while serving a callback (the
/// KeyboardInterrupt or the callback's own), which is what caused the error.
pub(crate) fn raise_recorded<T>(failure: &mut Option<PyErr>, r: PyResult<T>) -> PyResult<T> {
    match (r, failure.take()) {
        (Err(_), Some(e)) => Err(e),
        (r, _) => r,
    }
}

/// A model-layer error as the Python exception a user expects.
pub(crate) fn model_err(e: ModelError) -> PyErr {
    match e {
        ModelError::Interrupted => PyKeyboardInterrupt::new_err("interrupted"),
        ModelError::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(e.to_string())
        }
        ModelError::Io { .. } => PyOSError::new_err(e.to_string()),
        ModelError::Unsupported { .. } => PyNotImplementedError::new_err(e.to_string()),
        ModelError::Input(_)
        | ModelError::Config(_)
        | ModelError::Data(_)
        | ModelError::Preprocess(_)
        | ModelError::Json { .. } => PyValueError::new_err(e.to_string()),
        ModelError::Nn(_) | ModelError::Family(_) => PyRuntimeError::new_err(e.to_string()),
    }
}

/// A task-layer error as a Python exception.
pub(crate) fn task_err(e: sclm_tasks::TaskError) -> PyErr {
    use sclm_tasks::TaskError as T;
    match e {
        T::Model(m) => model_err(m),
        T::Input(_) | T::Data(_) | T::Preprocess(_) | T::Eval(_) => PyValueError::new_err(e.to_string()),
    }
}

/// Runs `f` with the GIL released; a panic inside becomes a `RuntimeError`.
pub(crate) fn detached<T: Send>(py: Python<'_>, f: impl FnOnce() -> PyResult<T> + Send) -> PyResult<T> {
    py.detach(|| match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown failure".into());
            Err(PyRuntimeError::new_err(format!("sclm internal error (please report it): {msg}")))
        }
    })
}

/// Serves a progress callback and Ctrl-C from compute running without the GIL: each tick
/// takes the GIL, checks for a pending signal (KeyboardInterrupt) and calls the callback with
/// the amount done. An exception from either stops the work and is raised afterwards.
pub(crate) struct Reporter {
    callback: Option<Py<PyAny>>,
    pub(crate) failure: Option<PyErr>,
}

impl Reporter {
    pub(crate) fn new(callback: Option<Py<PyAny>>) -> Self {
        Reporter { callback, failure: None }
    }

    /// Called after each unit of work with the total done; `Err(Interrupted)` stops it.
    pub(crate) fn tick(&mut self, done: usize) -> sclm_model::Result<()> {
        let r = Python::attach(|py| -> PyResult<()> {
            py.check_signals()?;
            if let Some(cb) = &self.callback {
                cb.call1(py, (done,))?;
            }
            Ok(())
        });
        match r {
            Ok(()) => Ok(()),
            Err(e) => {
                self.failure = Some(e);
                Err(ModelError::Interrupted)
            }
        }
    }

    /// The callback's exception (or the KeyboardInterrupt) in place of `Interrupted`.
    pub(crate) fn finish<T>(&mut self, r: PyResult<T>) -> PyResult<T> {
        raise_recorded(&mut self.failure, r)
    }
}

/// A dense `rows × cols` result handed to NumPy without a copy.
pub(crate) fn to_numpy<'py>(py: Python<'py>, d: Dense<f32>) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let a = numpy::ndarray::Array2::from_shape_vec((d.nrows, d.ncols), d.data)
        .map_err(|e| PyRuntimeError::new_err(format!("result shape: {e}")))?;
    Ok(a.into_pyarray(py))
}

/// The var table the gene matching reads: the var index plus string columns.
pub(crate) fn var_frame(var_names: Vec<String>, columns: HashMap<String, Vec<String>>) -> PyResult<DataFrame> {
    let mut var = DataFrame::new(var_names);
    let mut names: Vec<_> = columns.into_iter().collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, v) in names {
        var.insert(k, Column::Str(v)).map_err(|e| PyValueError::new_err(e.to_string()))?;
    }
    Ok(var)
}

/// `n × 2` coordinates from a float64 array.
pub(crate) fn coords_arg(c: Option<PyReadonlyArray2<'_, f64>>, n: usize) -> PyResult<Option<Vec<[f32; 2]>>> {
    let Some(c) = c else { return Ok(None) };
    let a = c.as_array();
    if a.nrows() != n || a.ncols() < 2 {
        return Err(PyValueError::new_err(format!(
            "coordinates have shape {:?}; expected ({n}, 2) (cells × 2)",
            a.shape()
        )));
    }
    Ok(Some((0..n).map(|r| [a[[r, 0]] as f32, a[[r, 1]] as f32]).collect()))
}

pub(crate) fn cpu() -> sclm_nn::burn::tensor::Device {
    sclm_nn::cpu_device()
}

/// A loaded model of any family (pretrained, imported or a fine-tuned classifier).
#[pyclass(name = "Model", module = "sclm._sclm", frozen)]
pub struct Model {
    pub(crate) inner: Box<dyn CellModel>,
}

/// The gene matching and per-call options shared by `embed` and `predict`.
struct Reading {
    mapping: GeneMapping,
    report: String,
    groups: Option<Vec<String>>,
    coords: Option<Vec<[f32; 2]>>,
    pieces: PieceOptions,
}

impl Model {
    /// The LangCell model behind this object, for `what` (an error naming the family otherwise).
    fn langcell(&self, what: &str) -> PyResult<&sclm_langcell::LangCellModel> {
        self.inner.as_any().downcast_ref::<sclm_langcell::LangCellModel>().ok_or_else(|| {
            PyNotImplementedError::new_err(format!(
                "{what} needs a LangCell model, not a {} model",
                self.inner.family()
            ))
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn reading(
        &self,
        n_obs: usize,
        var_names: Vec<String>,
        var_columns: HashMap<String, Vec<String>>,
        gene_id_column: Option<String>,
        groups: Option<Vec<String>>,
        coords: Option<PyReadonlyArray2<'_, f64>>,
        max_cells: usize,
        allow_non_integer: bool,
    ) -> PyResult<Reading> {
        let var = var_frame(var_names, var_columns)?;
        let (mapping, matched) =
            GeneMapping::for_dataset(self.inner.genes(), &var, gene_id_column.as_deref()).map_err(model_err)?;
        if let Some(g) = &groups {
            if g.len() != n_obs {
                return Err(PyValueError::new_err(format!("{} group labels for {n_obs} cells", g.len())));
            }
        }
        Ok(Reading {
            mapping,
            report: matched.report().to_string(),
            groups,
            coords: coords_arg(coords, n_obs)?,
            pieces: PieceOptions { max_cells_per_forward: max_cells.max(1), allow_non_integer },
        })
    }
}

#[pymethods]
impl Model {
    /// Opens a model directory of any family (its `model.json` names the family).
    #[staticmethod]
    fn load(path: PathBuf) -> PyResult<Self> {
        if !path.exists() {
            return Err(PyFileNotFoundError::new_err(format!("{}: no such model directory", path.display())));
        }
        let inner = sclm_model::load_any(&path, &families(), &cpu()).map_err(model_err)?;
        Ok(Model { inner })
    }

    /// A fresh (untrained) model of `family` over `genes`, its weights drawn with `seed`.
    #[staticmethod]
    #[pyo3(signature = (family, genes, seed = 0))]
    fn fresh(family: &str, genes: Vec<String>, seed: u64) -> PyResult<Self> {
        let fam = family_named(family)?;
        let device = cpu();
        sclm_nn::seed_everything(seed, &device);
        Ok(Model { inner: fam.fresh(genes, &device).map_err(model_err)? })
    }

    /// The family name (`cellplm`, ...).
    #[getter]
    fn family(&self) -> String {
        self.inner.family().to_string()
    }

    /// Width of the cell embedding.
    #[getter]
    fn embedding_dim(&self) -> usize {
        self.inner.embedding_dim()
    }

    /// The gene vocabulary, in model order.
    #[getter]
    fn genes(&self) -> Vec<String> {
        self.inner.genes().to_vec()
    }

    /// Class names of a fine-tuned classifier (empty for a pretrained model).
    #[getter]
    fn classes(&self) -> Vec<String> {
        self.inner.manifest().classes.clone()
    }

    /// The manifest (`model.json`) as JSON text.
    #[getter]
    fn manifest_json(&self) -> String {
        self.inner.manifest().to_json()
    }

    /// Whether the cells of one forward call attend to each other (grouping matters).
    #[getter]
    fn cells_interact(&self) -> bool {
        self.inner.cells_interact()
    }

    /// Saves the model as a model directory (atomic).
    fn save(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let m = &self.inner;
        detached(py, || m.save(&path).map_err(model_err))
    }

    /// Embeds the rows of `x` (see `matrix.rs` for the tuple): returns the `n_obs × dim`
    /// float32 embedding and the gene-matching report.
    #[pyo3(signature = (x, var_names, var_columns, gene_id_column = None, groups = None, coords = None,
                        max_cells = 10_000, allow_non_integer = false, progress = None))]
    #[allow(clippy::too_many_arguments)]
    fn embed<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        var_names: Vec<String>,
        var_columns: HashMap<String, Vec<String>>,
        gene_id_column: Option<String>,
        groups: Option<Vec<String>>,
        coords: Option<PyReadonlyArray2<'py, f64>>,
        max_cells: usize,
        allow_non_integer: bool,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<(Bound<'py, PyArray2<f32>>, String)> {
        let x = MatrixArg::extract(x)?;
        let src = x.source()?;
        let r = self.reading(
            src.nrows(),
            var_names,
            var_columns,
            gene_id_column,
            groups,
            coords,
            max_cells,
            allow_non_integer,
        )?;
        let mut rep = Reporter::new(progress);
        let model = &self.inner;
        let src = &*src;
        let out = detached(py, || {
            sclm_model::embed_rows(
                model.as_ref(),
                src,
                r.groups.as_deref(),
                r.coords.as_deref(),
                &r.mapping,
                &r.pieces,
                &mut |n| rep.tick(n),
            )
            .map_err(model_err)
        });
        let out = rep.finish(out)?;
        Ok((to_numpy(py, out)?, r.report))
    }

    /// Predictions of a fine-tuned classifier for the rows of `x`: class names, the
    /// probability of each, and the gene-matching report.
    #[pyo3(signature = (x, var_names, var_columns, gene_id_column = None, groups = None, coords = None,
                        max_cells = 10_000, allow_non_integer = false, progress = None))]
    #[allow(clippy::too_many_arguments)]
    fn predict<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        var_names: Vec<String>,
        var_columns: HashMap<String, Vec<String>>,
        gene_id_column: Option<String>,
        groups: Option<Vec<String>>,
        coords: Option<PyReadonlyArray2<'py, f64>>,
        max_cells: usize,
        allow_non_integer: bool,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<(Vec<String>, Bound<'py, PyArray1<f32>>, String)> {
        let x = MatrixArg::extract(x)?;
        let src = x.source()?;
        let r = self.reading(
            src.nrows(),
            var_names,
            var_columns,
            gene_id_column,
            groups,
            coords,
            max_cells,
            allow_non_integer,
        )?;
        let mut rep = Reporter::new(progress);
        let model = &self.inner;
        let src = &*src;
        let out = detached(py, || {
            sclm_model::predict_rows(
                model.as_ref(),
                src,
                r.groups.as_deref(),
                r.coords.as_deref(),
                &r.mapping,
                &r.pieces,
                &mut |n| rep.tick(n),
            )
            .map_err(model_err)
        });
        let (pred, prob) = rep.finish(out)?;
        Ok((pred, prob.into_pyarray(py), r.report))
    }

    /// Zero-shot scores of a LangCell model for the rows of `x` against one text per class:
    /// `(sim, ctm, combined, embeddings, report, truncated)` — `cells × classes` softmaxes of
    /// similarity and of cell-text matching, `alpha·sim + (1−alpha)·ctm`, the cell embeddings,
    /// the gene-matching report and `(class, tokens cut)` of texts longer than the text encoder.
    #[pyo3(signature = (x, var_names, var_columns, texts, gene_id_column = None, alpha = 0.2, top_k = None,
                        max_cells = 10_000, allow_non_integer = false, progress = None))]
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn zero_shot<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        var_names: Vec<String>,
        var_columns: HashMap<String, Vec<String>>,
        texts: Vec<String>,
        gene_id_column: Option<String>,
        alpha: f64,
        top_k: Option<usize>,
        max_cells: usize,
        allow_non_integer: bool,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<(
        Bound<'py, PyArray2<f32>>,
        Bound<'py, PyArray2<f32>>,
        Bound<'py, PyArray2<f32>>,
        Bound<'py, PyArray2<f32>>,
        String,
        Vec<(usize, usize)>,
    )> {
        let lc = self.langcell("zero-shot annotation")?;
        let x = MatrixArg::extract(x)?;
        let src = x.source()?;
        let r = self.reading(
            src.nrows(),
            var_names,
            var_columns,
            gene_id_column,
            None,
            None,
            max_cells,
            allow_non_integer,
        )?;
        let mut rep = Reporter::new(progress);
        let src = &*src;
        let opts = sclm_langcell::zeroshot::ZeroShotOptions { alpha, top_k };
        let out = detached(py, || {
            let classes = lc.class_texts(&texts).map_err(|e| model_err(e.into()))?;
            let scores =
                sclm_langcell::annotate::zero_shot_rows(lc, src, &r.mapping, &classes, &opts, &r.pieces, &mut |n| {
                    rep.tick(n)
                })
                .map_err(|e| model_err(e.into()))?;
            Ok((scores, sclm_langcell::annotate::truncated(&classes)))
        });
        let (s, truncated) = rep.finish(out)?;
        let n = src.nrows();
        let k = s.n_classes;
        let d = s.cell_embeddings.len().checked_div(n).unwrap_or(0);
        let combined = s.combined(alpha);
        let dense = |data: Vec<f32>, c: usize| Dense { nrows: n, ncols: c, data };
        Ok((
            to_numpy(py, dense(s.sim, k))?,
            to_numpy(py, dense(s.ctm, k))?,
            to_numpy(py, dense(combined, k))?,
            to_numpy(py, dense(s.cell_embeddings, d))?,
            r.report,
            truncated,
        ))
    }

    /// Few-shot tuning of a LangCell model (published recipe): `labels[i]` is the class of row
    /// `i` of `x` (an index into `texts`, or -1 = unlabelled); `k` cells per class are drawn with
    /// `seed`. Returns the tuned model and the rows used as shots.
    #[pyo3(signature = (x, var_names, var_columns, texts, labels, k, gene_id_column = None, allow_non_integer = false,
                        seed = 0))]
    #[allow(clippy::too_many_arguments)]
    fn few_shot<'py>(
        &self,
        py: Python<'py>,
        x: &Bound<'py, PyAny>,
        var_names: Vec<String>,
        var_columns: HashMap<String, Vec<String>>,
        texts: Vec<String>,
        labels: Vec<i64>,
        k: usize,
        gene_id_column: Option<String>,
        allow_non_integer: bool,
        seed: u64,
    ) -> PyResult<(Model, Vec<usize>)> {
        let lc = self.langcell("few-shot tuning")?;
        let x = MatrixArg::extract(x)?;
        let src = x.source()?;
        if labels.len() != src.nrows() {
            return Err(PyValueError::new_err(format!("{} labels for {} cells", labels.len(), src.nrows())));
        }
        let r =
            self.reading(src.nrows(), var_names, var_columns, gene_id_column, None, None, 10_000, allow_non_integer)?;
        let lab: Vec<Option<usize>> = labels.iter().map(|&l| usize::try_from(l).ok()).collect();
        let shots = sclm_langcell::fewshot::draw_shots(&lab, texts.len(), k, seed);
        if shots.is_empty() {
            return Err(PyValueError::new_err("few-shot: no labelled cell among the classes"));
        }
        let src = &*src;
        let tuned = detached(py, || {
            let sub = src.gather(&shots).map_err(|e| model_err(e.into()))?;
            let tokens = sclm_langcell::corpus::tokenize_rows_of(lc.gene_tokenizer(), &sub, &r.mapping, &r.pieces)
                .map_err(|e| model_err(e.into()))?;
            let y: Vec<usize> = shots.iter().filter_map(|&i| lab[i]).collect();
            let cfg = sclm_langcell::fewshot::FewShotConfig { seed, ..Default::default() };
            lc.few_shot(&tokens, &y, &texts, &cfg, &cpu().autodiff(), &mut sclm_nn::train::NoProgress)
                .map(|(m, _)| m)
                .map_err(|e| model_err(e.into()))
        })?;
        Ok((Model { inner: Box::new(tuned) }, shots))
    }

    fn __repr__(&self) -> String {
        let m = self.inner.manifest();
        let kind = if m.classes.is_empty() {
            String::from("pretrained")
        } else {
            format!("classifier over {} classes", m.classes.len())
        };
        format!(
            "<sclm Model family={} {kind}, {} genes, embedding dim {}>",
            self.inner.family(),
            self.inner.genes().len(),
            self.inner.embedding_dim()
        )
    }
}

/// The forward calls of an embedding (cells that attend to each other), as arrays of rows:
/// groups in sorted label order, a group above `max_cells` split into near-equal contiguous
/// pieces. With `shard = (i, n)`, only shard `i` (from 0) of `n` (whole calls, near-equal cell
/// counts). Used by `sclm.dask` to embed a dataset in parallel with results identical to one
/// process.
#[pyfunction]
#[pyo3(signature = (n_obs, groups = None, max_cells = 10_000, shard = None))]
fn plan_pieces<'py>(
    py: Python<'py>,
    n_obs: usize,
    groups: Option<Vec<String>>,
    max_cells: usize,
    shard: Option<(usize, usize)>,
) -> PyResult<Vec<Bound<'py, PyArray1<i64>>>> {
    if let Some(g) = &groups {
        if g.len() != n_obs {
            return Err(PyValueError::new_err(format!("{} group labels for {n_obs} cells", g.len())));
        }
    }
    let mut pieces = sclm_model::cells::plan_pieces(groups.as_deref(), n_obs, max_cells.max(1));
    if let Some((i, n)) = shard {
        pieces = sclm_model::cells::shard_pieces(pieces, i, n).map_err(model_err)?;
    }
    Ok(pieces.into_iter().map(|p| p.into_iter().map(|r| r as i64).collect::<Vec<_>>().into_pyarray(py)).collect())
}

/// The addresses of the buffers a matrix tuple is read from, as the row source sees them (the
/// tests compare them with NumPy's to show that nothing was copied).
#[pyfunction]
fn borrowed_addresses(x: &Bound<'_, PyAny>) -> PyResult<Vec<usize>> {
    let m = MatrixArg::extract(x)?;
    let _ = m.source()?;
    m.addresses()
}

/// The version of the native module (the workspace version).
/// `(labels, texts, report, unmatched)` of [`class_texts`].
type LabelTextsResult = (Vec<String>, Vec<String>, String, Vec<String>);

/// Texts for class labels: a user table (`texts`, label → text) first, then the Cell Ontology
/// TSV at `ontology` by name or synonym. Returns `(labels, texts, report, unmatched)` for the
/// labels that got a text, in input order.
#[pyfunction]
#[pyo3(signature = (labels, ontology = None, texts = None))]
fn class_texts(
    labels: Vec<String>,
    ontology: Option<PathBuf>,
    texts: Option<HashMap<String, String>>,
) -> PyResult<LabelTextsResult> {
    let onto = match &ontology {
        Some(p) => Some(sclm_langcell::ontology::Ontology::read(p).map_err(|e| model_err(e.into()))?),
        None => None,
    };
    let lt = sclm_langcell::ontology::label_texts(&labels, texts.as_ref(), onto.as_ref());
    let report = lt.report();
    let (names, t): (Vec<String>, Vec<String>) = lt.matched.into_iter().map(|m| (m.0, m.1)).unzip();
    Ok((names, t, report, lt.unmatched))
}

#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The number of threads compute uses (rayon's global pool); `set_threads` must come first.
#[pyfunction]
fn set_threads(n: usize) -> PyResult<()> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(n.max(1))
        .build_global()
        .map_err(|e| PyRuntimeError::new_err(format!("cannot set {n} threads (set them before any compute): {e}")))
}

#[pymodule]
fn _sclm(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_function(wrap_pyfunction!(plan_pieces, m)?)?;
    m.add_function(wrap_pyfunction!(borrowed_addresses, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(class_texts, m)?)?;
    m.add_function(wrap_pyfunction!(set_threads, m)?)?;
    tasks::register(m)?;
    Ok(())
}
