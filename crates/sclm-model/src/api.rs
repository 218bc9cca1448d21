//! What every model family offers, as one object-safe trait ([`CellModel`]), the functions that
//! run any model over AnnData ([`embed`], [`embed_streaming`], [`predict`]), and
//! [`load_any`], which opens a model directory with the family its manifest names.
//!
//! A family implements [`CellModel`] for its loaded model (weights plus [`Manifest`]) and
//! [`Family`] for its loader; grouping, gene matching, streaming and output assembly are done
//! here once for all families.
use std::any::Any;
use std::path::Path;

use sclm_data::{AnnData, CsrMatrix, Dense, RowSource};
use sclm_nn::burn::tensor::Device;
use sclm_nn::embedding::CsrRows;
use sclm_preprocess::GeneMatch;

use crate::cells::{self, CellLabels, PieceOptions, StreamOptions};
use crate::dir::{read_manifest, Manifest};
use crate::error::{ModelError, Result};
use crate::finetune::{FinetuneRecipe, LabeledCells, RunOptions};
use crate::genes::GeneMapping;
use sclm_nn::train::{FitSummary, Progress};

/// Embeds the cells of one forward call. Built once per run by [`CellModel::embedder`] (it may
/// hold a prepared copy of the weights and reusable buffers).
pub trait PieceEmbedder {
    /// The embedding of every cell of a piece, row-major `cells × embedding_dim`.
    ///
    /// # Shapes
    /// - `counts`: `cells × vocabulary` (raw counts over the model's genes)
    /// - `coords`: `cells` 2-D positions (models with a positional encoding)
    /// - returns `cells · embedding_dim` values
    fn embed_piece(&self, counts: &CsrRows<'_>, coords: Option<&[[f32; 2]]>) -> Result<Vec<f32>>;
}

/// Class probabilities of the cells of one forward call.
pub trait PieceClassifier {
    /// Softmax probabilities, row-major `cells × classes`.
    ///
    /// # Shapes
    /// - `counts`: `cells × vocabulary`; returns `cells · classes` values
    fn probabilities(&self, counts: &CsrRows<'_>, coords: Option<&[[f32; 2]]>) -> Result<Vec<f32>>;
}

/// A loaded model of any family.
pub trait CellModel: Send + Sync {
    /// The family name written in the manifest (`cellplm`, ...).
    fn family(&self) -> &str;
    /// The manifest (registry of input preparation, classes).
    fn manifest(&self) -> &Manifest;
    /// The gene vocabulary, in model order.
    fn genes(&self) -> &[String];
    /// Width of the cell embedding.
    fn embedding_dim(&self) -> usize;
    /// Whether the cells of a forward call attend to each other (CellPLM: yes, so grouping
    /// matters; a per-cell encoder: no).
    fn cells_interact(&self) -> bool {
        true
    }
    /// Prepares zero-shot embedding.
    fn embedder(&self) -> Result<Box<dyn PieceEmbedder + '_>>;
    /// Prepares classification (fine-tuned classifiers only).
    fn classifier(&self) -> Result<Box<dyn PieceClassifier + '_>> {
        Err(ModelError::Unsupported {
            family: self.family().into(),
            what: "classify cells (not a fine-tuned classifier)".into(),
        })
    }
    /// Fine-tunes a classifier on this model (the family's published recipe, the generic
    /// [`FinetuneRecipe`] numbers) on `device` (an autodiff device); returns the best model by
    /// validation macro-F1, itself a [`CellModel`] whose manifest lists the classes.
    fn finetune_classifier(
        &self,
        cells: &LabeledCells<'_>,
        recipe: &FinetuneRecipe,
        run: &RunOptions,
        device: &Device,
        progress: &mut dyn Progress,
    ) -> Result<(Box<dyn CellModel>, FitSummary)> {
        let _ = (cells, recipe, run, device, progress);
        Err(ModelError::Unsupported { family: self.family().into(), what: "be fine-tuned for classification".into() })
    }
    /// Trains (a copy of) the model to reconstruct expression on `datasets` (its masked
    /// reconstruction objective: CellPLM's masked-cell modelling; a fresh model is built with
    /// covariate tables for these datasets), on `device` (an autodiff device). Returns the
    /// trained model.
    fn fit_reconstruction(
        &self,
        datasets: &[(String, &AnnData)],
        fit: &ReconstructionFit,
        device: &Device,
        progress: &mut dyn Progress,
    ) -> Result<Box<dyn CellModel>> {
        let _ = (datasets, fit, device, progress);
        Err(ModelError::Unsupported {
            family: self.family().into(),
            what: "be trained to reconstruct expression".into(),
        })
    }
    /// Expected expression fractions of every cell of `datasets[which]` over the vocabulary
    /// (`cells × genes`, rows summing to 1 over the genes the dataset measures, or over the
    /// whole vocabulary with `opts.whole_vocabulary`: imputing genes it does not measure).
    /// `datasets` and the covariate options are those the model was fitted with, if it was.
    fn reconstruct(
        &self,
        datasets: &[(String, &AnnData)],
        which: usize,
        opts: &ReconstructOptions,
    ) -> Result<Dense<f32>> {
        let _ = (datasets, which, opts);
        Err(ModelError::Unsupported { family: self.family().into(), what: "reconstruct expression".into() })
    }
    /// Trains (a copy of) the model to predict the response of control cells to a genetic
    /// perturbation (CellPLM §4.5), on `device` (an autodiff device).
    fn fit_perturbation(
        &self,
        cells: &PerturbationCells<'_>,
        fit: &ReconstructionFit,
        device: &Device,
        progress: &mut dyn Progress,
    ) -> Result<Box<dyn PerturbationPredictor>> {
        let _ = (cells, fit, device, progress);
        Err(ModelError::Unsupported { family: self.family().into(), what: "predict perturbation responses".into() })
    }
    /// Saves the model as a model directory (atomic).
    fn save(&self, dir: &Path) -> Result<()>;
    /// The concrete model, for family-specific tools (e.g. CellPLM's attention export).
    fn as_any(&self) -> &dyn Any;
}

/// How a model is trained on data in [`CellModel::fit_reconstruction`] and
/// [`CellModel::fit_perturbation`]. Rates a family does not use are ignored by it and say so
/// in its docs; `None` = the family's published value.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReconstructionFit {
    /// Passes over the data.
    pub epochs: usize,
    /// Peak learning rate (`None`: the family's default for the objective).
    pub lr: Option<f64>,
    /// AdamW weight decay (`None`: the family's default).
    pub weight_decay: Option<f64>,
    /// Fraction of cells whose genes are masked (`None`: the family's default).
    pub mask_node_rate: Option<f64>,
    /// Mean fraction of genes hidden in a masked cell (`None`: the family's default).
    pub mask_feature_rate: Option<f64>,
    /// Seed.
    pub seed: u64,
    /// How cells are read (group key, layer, count checks).
    pub cells: ReconstructOptions,
}

/// How cells are read for reconstruction.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ReconstructOptions {
    /// obs column of the groups (`None`: one group per dataset).
    pub group_key: Option<String>,
    /// Layer with the counts (default X).
    pub layer: Option<String>,
    /// Accept non-integer values.
    pub allow_non_integer: bool,
    /// Give each (dataset, batch) its own decoder covariate (fresh models; default false).
    pub with_batch: bool,
    /// Give each dataset its own decoder covariate (default false).
    pub with_dataset: bool,
    /// Fractions over the whole vocabulary (imputation) rather than the dataset's genes.
    pub whole_vocabulary: bool,
}

/// The cells of a perturbation experiment, as the protocol split them.
pub struct PerturbationCells<'a> {
    /// Every cell (counts over the dataset's genes).
    pub adata: &'a AnnData,
    /// Control cells (rows).
    pub controls: &'a [usize],
    /// Training conditions: the perturbed genes (var names of `adata`) and the rows of the cells
    /// under them.
    pub train: &'a [(Vec<String>, Vec<usize>)],
    /// Validation conditions.
    pub valid: &'a [(Vec<String>, Vec<usize>)],
    /// Accept non-integer values.
    pub allow_non_integer: bool,
}

/// A trained perturbation model.
pub trait PerturbationPredictor {
    /// The mean predicted log-normalised profile (`log1p(x / Σx · 1e4)` over the dataset's
    /// genes, in var order; `NaN` for genes outside the model's vocabulary, which the protocol
    /// leaves out of every method's score) of the control cells under a perturbation of
    /// `genes` (empty = control).
    fn predict_mean(&self, genes: &[String]) -> Result<Vec<f32>>;
}

/// A model family's loader, for [`load_any`].
pub trait Family: Sync {
    /// The family name of its manifests.
    fn name(&self) -> &'static str;
    /// Loads a directory whose manifest names this family.
    fn load(&self, dir: &Path, manifest: Manifest, device: &Device) -> Result<Box<dyn CellModel>>;
    /// A fresh (randomly initialised) model of the family's small CPU preset over `genes`, for
    /// protocols run without a pretrained model.
    fn fresh(&self, genes: Vec<String>, device: &Device) -> Result<Box<dyn CellModel>> {
        let _ = (genes, device);
        Err(ModelError::Unsupported { family: self.name().into(), what: "build a fresh model".into() })
    }
}

/// Opens the model directory `dir` with the family its manifest names (directories written
/// before manifests existed are CellPLM's).
pub fn load_any(dir: impl AsRef<Path>, families: &[&dyn Family], device: &Device) -> Result<Box<dyn CellModel>> {
    let dir = dir.as_ref();
    let manifest = read_manifest(dir)?;
    let family = families.iter().find(|f| f.name() == manifest.family).ok_or_else(|| {
        ModelError::Config(format!(
            "{}: family '{}' is not built into this sclm (known: {})",
            dir.display(),
            manifest.family,
            families.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
        ))
    })?;
    family.load(dir, manifest, device)
}

/// How [`embed`] and [`predict`] read an AnnData.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct EmbedOptions {
    /// obs column whose values form the groups (`None` = the model's registry `group_key`;
    /// `Some("")` = all cells one group). A key absent from obs means one group.
    pub group_key: Option<String>,
    /// Layer holding the counts (default: X).
    pub layer: Option<String>,
    /// obsm key of 2-D coordinates (`None` = the model's registry `spatial_key`, used when the
    /// data has it; `Some("")` = no coordinates; `Some(key)` = that key, which must exist).
    pub spatial_key: Option<String>,
    /// var column with the gene identifiers (default: the var index or `gene_ids`, whichever
    /// matches more).
    pub gene_id_column: Option<String>,
    /// Forward-call size and count checks.
    pub pieces: PieceOptions,
}

impl EmbedOptions {
    /// The coordinates in force for `model` (see [`EmbedOptions::spatial_key`]).
    pub fn coordinates_for(
        &self,
        model: &dyn CellModel,
        obsm: &std::collections::BTreeMap<String, sclm_data::Array2>,
    ) -> Result<Option<Vec<[f32; 2]>>> {
        match &self.spatial_key {
            Some(k) if k.is_empty() => Ok(None),
            Some(k) => Ok(Some(cells::coordinates(obsm, k)?)),
            None => match model.manifest().registry.spatial_key() {
                Some(k) if obsm.contains_key(k) => Ok(Some(cells::coordinates(obsm, k)?)),
                _ => Ok(None),
            },
        }
    }

    /// The obsm key of the coordinates in force for `model` on data with these obsm keys.
    pub fn spatial_key_for<'a>(&'a self, model: &'a dyn CellModel, has: impl Fn(&str) -> bool) -> Option<&'a str> {
        match &self.spatial_key {
            Some(k) if k.is_empty() => None,
            Some(k) => Some(k.as_str()),
            None => model.manifest().registry.spatial_key().filter(|k| has(k)),
        }
    }

    /// The group key in force for `model`.
    pub fn group_key_for<'a>(&'a self, model: &'a dyn CellModel) -> Option<&'a str> {
        match &self.group_key {
            Some(k) if k.is_empty() => None,
            Some(k) => Some(k.as_str()),
            None => model.manifest().registry.group_key(),
        }
    }
}

/// The cells of an AnnData prepared for a model: counts (X or a layer), gene mapping and its
/// report, group labels, coordinates.
pub struct PreparedCells<'a> {
    /// Counts, cells × dataset genes.
    pub counts: std::borrow::Cow<'a, CsrMatrix>,
    /// Dataset columns → vocabulary.
    pub mapping: GeneMapping,
    /// The gene match (print `report()`).
    pub matched: GeneMatch,
    /// Group label of each cell (`None` = one group).
    pub groups: Option<Vec<String>>,
    /// Coordinates of each cell.
    pub coords: Option<Vec<[f32; 2]>>,
}

impl PreparedCells<'_> {
    /// Calls `f` once per forward call over these cells ([`cells::for_each_piece`] with their
    /// counts, groups, coordinates and gene mapping), for a vocabulary of `n_vocab` genes.
    pub fn for_each_piece(
        &self,
        n_vocab: usize,
        opts: &PieceOptions,
        f: &mut cells::PieceFn<'_, ModelError>,
    ) -> Result<()> {
        let counts: &CsrMatrix = &self.counts;
        cells::for_each_piece(n_vocab, counts, self.groups.as_deref(), self.coords.as_deref(), &self.mapping, opts, f)
    }
}

/// Reads counts, genes, groups and coordinates of `adata` for `model` through the one
/// gene-matching path.
pub fn prepare<'a>(model: &dyn CellModel, adata: &'a AnnData, opts: &EmbedOptions) -> Result<PreparedCells<'a>> {
    let counts = cells::counts_matrix(adata, opts.layer.as_deref())?;
    let (mapping, matched) = GeneMapping::for_dataset(model.genes(), &adata.var, opts.gene_id_column.as_deref())?;
    let groups = cells::group_labels(&adata.obs, opts.group_key_for(model));
    let coords = opts.coordinates_for(model, &adata.obsm)?;
    Ok(PreparedCells { counts, mapping, matched, groups, coords })
}

/// Embeds every cell of `adata` with `model`; `progress` receives the number of cells done.
/// Returns `cells × embedding_dim` in the original cell order, and the gene match.
pub fn embed(
    model: &dyn CellModel,
    adata: &AnnData,
    opts: &EmbedOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<(Dense<f32>, GeneMatch)> {
    let p = prepare(model, adata, opts)?;
    let out = embed_prepared(model, &p, &opts.pieces, progress)?;
    Ok((out, p.matched))
}

/// [`embed`] on cells already prepared.
pub fn embed_prepared(
    model: &dyn CellModel,
    p: &PreparedCells<'_>,
    opts: &PieceOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<Dense<f32>> {
    let counts: &CsrMatrix = &p.counts;
    embed_rows(model, counts, p.groups.as_deref(), p.coords.as_deref(), &p.mapping, opts, &mut |n| {
        progress(n);
        Ok(())
    })
}

/// Embeds the rows of `x` (cells × dataset genes: an in-memory CSR matrix or any
/// [`RowSource`], such as a borrowed NumPy or SciPy matrix): `groups` gives each row's group
/// label (`None` = one group), `coords` its coordinates. Returns `rows × embedding_dim` in row
/// order. `progress` receives the number of rows done after each forward call; an error it
/// returns (e.g. [`ModelError::Interrupted`]) stops the work.
pub fn embed_rows(
    model: &dyn CellModel,
    x: &dyn RowSource,
    groups: Option<&[String]>,
    coords: Option<&[[f32; 2]]>,
    mapping: &GeneMapping,
    opts: &PieceOptions,
    progress: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<Dense<f32>> {
    let d = model.embedding_dim();
    let mut out = Dense::zeros(x.nrows(), d);
    let e = model.embedder()?;
    let mut done = 0;
    cells::for_each_piece(model.genes().len(), x, groups, coords, mapping, opts, &mut |rows, counts, pc| {
        let v = e.embed_piece(counts, pc)?;
        check_len(v.len(), rows.len(), d)?;
        out.set_rows(rows, &v);
        done += rows.len();
        progress(done)
    })?;
    Ok(out)
}

/// Embeds a file too large to hold, reading rows through `read_rows(a, b)` (see
/// [`cells::stream_pieces`]); identical to [`embed`] on the whole matrix.
pub fn embed_streaming<E: From<ModelError>>(
    model: &dyn CellModel,
    cells_: &CellLabels<'_>,
    mapping: &GeneMapping,
    opts: &PieceOptions,
    stream: &StreamOptions,
    read_rows: &mut dyn FnMut(usize, usize) -> std::result::Result<CsrMatrix, E>,
    progress: &mut dyn FnMut(usize),
) -> std::result::Result<Dense<f32>, E> {
    let d = model.embedding_dim();
    let mut out = Dense::zeros(cells_.n_obs, d);
    let e = model.embedder()?;
    let mut done = 0;
    cells::stream_pieces(model.genes().len(), cells_, mapping, opts, stream, read_rows, &mut |rows, counts, pc| {
        let v = e.embed_piece(counts, pc)?;
        check_len(v.len(), rows.len(), d)?;
        out.set_rows(rows, &v);
        done += rows.len();
        progress(done);
        Ok(())
    })?;
    Ok(out)
}

/// Predictions of a fine-tuned classifier for every cell of `adata`: the class name and its
/// probability per cell, in cell order, and the gene match.
pub fn predict(
    model: &dyn CellModel,
    adata: &AnnData,
    opts: &EmbedOptions,
    progress: &mut dyn FnMut(usize),
) -> Result<(Vec<String>, Vec<f32>, GeneMatch)> {
    let p = prepare(model, adata, opts)?;
    let counts: &CsrMatrix = &p.counts;
    let (pred, prob) =
        predict_rows(model, counts, p.groups.as_deref(), p.coords.as_deref(), &p.mapping, &opts.pieces, &mut |n| {
            progress(n);
            Ok(())
        })?;
    Ok((pred, prob, p.matched))
}

/// [`predict`] on the rows of `x` (see [`embed_rows`] for the arguments): the class name and
/// its probability per row.
pub fn predict_rows(
    model: &dyn CellModel,
    x: &dyn RowSource,
    groups: Option<&[String]>,
    coords: Option<&[[f32; 2]]>,
    mapping: &GeneMapping,
    opts: &PieceOptions,
    progress: &mut dyn FnMut(usize) -> Result<()>,
) -> Result<(Vec<String>, Vec<f32>)> {
    let classes = model.manifest().classes.clone();
    let clf = model.classifier()?;
    let n = x.nrows();
    let k = classes.len();
    if k == 0 {
        return Err(ModelError::Config("the classifier's manifest lists no classes".into()));
    }
    let (mut pred, mut prob) = (vec![String::new(); n], vec![f32::NAN; n]);
    let mut done = 0;
    cells::for_each_piece(model.genes().len(), x, groups, coords, mapping, opts, &mut |rows, counts, pc| {
        let pr = clf.probabilities(counts, pc)?;
        if pr.len() != rows.len() * k {
            return Err(ModelError::Input(format!(
                "the classifier returned {} probabilities for {} cells × {k} classes",
                pr.len(),
                rows.len()
            )));
        }
        for (i, &r) in rows.iter().enumerate() {
            let (c, v) = argmax(&pr[i * k..(i + 1) * k]);
            pred[r] = classes[c].clone();
            prob[r] = v;
        }
        done += rows.len();
        progress(done)
    })?;
    Ok((pred, prob))
}

/// Index and value of the largest entry (the first on ties).
pub fn argmax(row: &[f32]) -> (usize, f32) {
    row.iter().enumerate().fold((0, f32::MIN), |b, (c, &v)| if v > b.1 { (c, v) } else { b })
}

/// Checks that a piece's output holds `cells × d` values.
pub fn check_len(got: usize, cells: usize, d: usize) -> Result<()> {
    if got != cells * d {
        return Err(ModelError::Input(format!("the model returned {got} values for {cells} cells × {d} dimensions")));
    }
    Ok(())
}
