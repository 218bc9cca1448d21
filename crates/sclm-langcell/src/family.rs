//! LangCell as a model family of the model layer: [`LangCellModel`] (the model, its gene and
//! text tokenizers and its manifest) implements [`sclm_model::CellModel`]; [`FAMILY`] opens
//! LangCell directories for [`sclm_model::load_any`].
//!
//! Embedding: each cell is encoded on its own (cells do not attend to each other); cells of a
//! forward call are sorted by token count and encoded in runs of similar length, so padding
//! costs little and a cell's embedding does not depend on its neighbours (padded keys are
//! masked).
use std::any::Any;
use std::path::Path;

use burn::prelude::*;
use sclm_model::{
    CellModel, ClassifierHead, FinetuneRecipe, LabeledCells, Manifest, ModelError, ModelKind, PieceClassifier,
    PieceEmbedder, Registry, RunOptions,
};
use sclm_nn::burn;
use sclm_nn::burn::tensor::Device;
use sclm_nn::embedding::CsrRows;
use sclm_nn::train::{FitSummary, Progress};

use crate::error::{LangCellError, Result};
use crate::finetune::{finetune_classifier, LangCellClassifier};
use crate::model::{Batch, LangCell};
use crate::text::TextTokenizer;
use crate::tokenizer::RankValueTokenizer;
use crate::weights::{read_files, write_files};

/// The family name in manifests.
pub const NAME: &str = "langcell";

/// The LangCell loader for [`sclm_model::load_any`].
pub static FAMILY: LangCellFamily = LangCellFamily;

/// LangCell's [`sclm_model::Family`].
#[derive(Debug, Clone, Copy, Default)]
pub struct LangCellFamily;

/// Cells encoded together in one encoder call (sorted by length first).
pub const CELLS_PER_CALL: usize = 16;

/// A LangCell model with its tokenizers and manifest.
pub struct LangCellModel {
    manifest: Manifest,
    model: LangCell,
    genes: RankValueTokenizer,
    text: TextTokenizer,
    device: Device,
    /// The classification head of a fine-tuned classifier (its cell encoder is `model`'s).
    head: Option<ClassifierHead>,
    /// A fresh (untrained) model: fine-tuned at a higher learning rate.
    fresh: bool,
}

/// The registry of LangCell models: raw counts over Ensembl ids, rank-value encoding inside the
/// model, cells not grouped, no coordinates.
pub fn registry() -> Registry {
    Registry {
        transform: "rank_value".into(),
        gene_id: "ensembl_gene_id".into(),
        group_key: String::new(),
        spatial_key: String::new(),
        ..Default::default()
    }
}

impl LangCellModel {
    /// A model with its tokenizers (a pretrained or imported model).
    pub fn new(model: LangCell, genes: RankValueTokenizer, text: TextTokenizer, device: Device) -> Result<Self> {
        if model.config().cell.vocab_size != genes.vocab_size() {
            return Err(LangCellError::Config(format!(
                "vocabulary mismatch: the cell encoder has {} token rows, the gene vocabulary needs {}",
                model.config().cell.vocab_size,
                genes.vocab_size()
            )));
        }
        Ok(LangCellModel {
            manifest: Manifest::new(NAME, ModelKind::Pretrained, registry()),
            model,
            genes,
            text,
            device,
            head: None,
            fresh: false,
        })
    }

    /// Loads a LangCell model directory on `device`.
    pub fn load(dir: impl AsRef<Path>, device: &Device) -> Result<Self> {
        let dir = dir.as_ref();
        let manifest = sclm_model::read_manifest(dir)?;
        Self::load_with(dir, manifest, device)
    }

    fn load_with(dir: &Path, manifest: Manifest, device: &Device) -> Result<Self> {
        if manifest.family != NAME {
            return Err(LangCellError::Config(format!(
                "{}: a {} model, not a LangCell model",
                dir.display(),
                manifest.family
            )));
        }
        let (model, genes, text) = read_files(dir, device)?;
        let head = match manifest.kind {
            ModelKind::Pretrained => None,
            ModelKind::Classifier => {
                let p = dir.join("head.safetensors");
                let sd = sclm_weights::read_safetensors(&p)?;
                let get = |k: &str| {
                    sd.get(k)
                        .map(|t| t.to_f32_vec())
                        .ok_or_else(|| LangCellError::Config(format!("{}: no tensor {k}", p.display())))
                };
                let h = model.config().cell.hidden_size;
                let head = ClassifierHead::from_parts(&get("head.weight")?, &get("head.bias")?, h, 0.0, device)?;
                if head.n_classes() != manifest.classes.len() {
                    return Err(LangCellError::Config(format!(
                        "{}: {} classes in the head, {} in model.json",
                        dir.display(),
                        head.n_classes(),
                        manifest.classes.len()
                    )));
                }
                Some(head)
            }
        };
        Ok(LangCellModel { manifest, model, genes, text, device: device.clone(), head, fresh: false })
    }

    /// A fresh small model ([`LangCellConfig::small`]) over `genes` for protocols run without a
    /// pretrained model: every gene's median is 1 (cells are ranked by normalised expression),
    /// the text tokenizer a minimal one (a fresh model has learnt no text).
    pub fn fresh(genes: Vec<String>, device: &Device) -> Result<Self> {
        let n = genes.len();
        let tok = RankValueTokenizer::new(genes, vec![1.0; n], 256)?;
        let text = TextTokenizer::from_texts(&["cell type".to_string()], 128)?;
        let cfg = crate::config::LangCellConfig::small(n, text.vocab_size());
        let mut m = Self::new(cfg.init(device)?, tok, text, device.clone())?;
        m.manifest.registry.gene_id = "var_index".into();
        m.fresh = true;
        Ok(m)
    }

    /// Saves the model directory (atomic); a classifier adds `head.safetensors` (`head.weight`
    /// `[classes, hidden]`, `head.bias`).
    pub fn save_dir(&self, dir: &Path) -> Result<()> {
        let mut m = self.model.clone();
        sclm_model::save_atomic(dir, |tmp| {
            write_files(tmp, &self.manifest, &mut m, &self.genes, &self.text)?;
            if let Some(h) = &self.head {
                let (w, b) = h.to_parts();
                let mut sd = sclm_weights::StateDict::new();
                let (k, d) = (h.n_classes(), h.d_input());
                sd.insert(
                    "head.weight".into(),
                    sclm_weights::TensorData::from_f32(vec![k, d], w).map_err(LangCellError::from)?,
                );
                sd.insert(
                    "head.bias".into(),
                    sclm_weights::TensorData::from_f32(vec![k], b).map_err(LangCellError::from)?,
                );
                sclm_weights::write_safetensors(tmp.join("head.safetensors"), &sd, None)
                    .map_err(LangCellError::from)?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// The network.
    pub fn model(&self) -> &LangCell {
        &self.model
    }

    /// The gene tokenizer.
    pub fn gene_tokenizer(&self) -> &RankValueTokenizer {
        &self.genes
    }

    /// The text tokenizer.
    pub fn text_tokenizer(&self) -> &TextTokenizer {
        &self.text
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Cell embeddings of token sequences (in the order given), `CELLS_PER_CALL` cells of
    /// similar length per encoder call.
    ///
    /// # Shapes
    /// returns `cells · proj_dim` values, row-major
    pub fn embed_tokens(&self, cells: &[Vec<u32>]) -> Result<Vec<f32>> {
        let d = self.model.config().proj_dim;
        let mut out = vec![0f32; cells.len() * d];
        for_length_runs(cells, |idx| {
            let seqs: Vec<Vec<u32>> = idx.iter().map(|&i| cells[i].clone()).collect();
            let batch = Batch::cells(&seqs, &self.device)?;
            let (_, emb) = self.model.encode_cells(&batch)?;
            let v = to_vec(emb);
            for (k, &i) in idx.iter().enumerate() {
                out[i * d..(i + 1) * d].copy_from_slice(&v[k * d..(k + 1) * d]);
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// Calls `f` with runs of at most [`CELLS_PER_CALL`] indices of `seqs`, by increasing length.
pub(crate) fn for_length_runs(seqs: &[Vec<u32>], mut f: impl FnMut(&[usize]) -> Result<()>) -> Result<()> {
    let mut order: Vec<usize> = (0..seqs.len()).collect();
    order.sort_by_key(|&i| (seqs[i].len(), i));
    for run in order.chunks(CELLS_PER_CALL) {
        f(run)?;
    }
    Ok(())
}

pub(crate) fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().expect("float tensor data")
}

struct Classify<'m>(&'m LangCellModel, LangCellClassifier);

impl PieceClassifier for Classify<'_> {
    fn probabilities(&self, counts: &CsrRows<'_>, _coords: Option<&[[f32; 2]]>) -> sclm_model::Result<Vec<f32>> {
        let tokens = self.0.genes.tokenize_rows(counts)?;
        Ok(self.1.probabilities(&tokens, &self.0.device)?)
    }
}

struct Embed<'m>(&'m LangCellModel);

impl PieceEmbedder for Embed<'_> {
    fn embed_piece(&self, counts: &CsrRows<'_>, _coords: Option<&[[f32; 2]]>) -> sclm_model::Result<Vec<f32>> {
        let tokens = self.0.genes.tokenize_rows(counts)?;
        Ok(self.0.embed_tokens(&tokens)?)
    }
}

impl CellModel for LangCellModel {
    fn family(&self) -> &str {
        NAME
    }

    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    fn genes(&self) -> &[String] {
        self.genes.genes()
    }

    fn embedding_dim(&self) -> usize {
        self.model.config().proj_dim
    }

    fn cells_interact(&self) -> bool {
        false
    }

    fn embedder(&self) -> sclm_model::Result<Box<dyn PieceEmbedder + '_>> {
        Ok(Box::new(Embed(self)))
    }

    fn classifier(&self) -> sclm_model::Result<Box<dyn PieceClassifier + '_>> {
        match &self.head {
            Some(h) => Ok(Box::new(Classify(
                self,
                LangCellClassifier { cell_bert: self.model.cell_bert.clone(), head: h.clone() },
            ))),
            None => Err(ModelError::Unsupported {
                family: NAME.into(),
                what: "classify cells: this is a pretrained model, not a classifier (fine-tune one with `sclm finetune annotation --save-model`, or annotate zero-shot with `sclm annotate`)".into(),
            }),
        }
    }

    fn finetune_classifier(
        &self,
        cells: &LabeledCells<'_>,
        recipe: &FinetuneRecipe,
        run: &RunOptions,
        device: &Device,
        progress: &mut dyn Progress,
    ) -> sclm_model::Result<(Box<dyn CellModel>, FitSummary)> {
        let bert = self.model.copy_to(device)?.cell_bert;
        let (clf, summary) = finetune_classifier(bert, &self.genes, cells, recipe, self.fresh, run, progress)?;
        let mut model = self.model.clone();
        model.cell_bert = burn::module::Module::to_device(clf.cell_bert, &self.device);
        let mut manifest = Manifest::new(NAME, ModelKind::Classifier, self.manifest.registry.clone());
        manifest.classes = cells.classes.to_vec();
        let out = LangCellModel {
            manifest,
            model,
            genes: self.genes.clone(),
            text: self.text.clone(),
            device: self.device.clone(),
            head: Some(clf.head),
            fresh: false,
        };
        Ok((Box::new(out), summary))
    }

    fn save(&self, dir: &Path) -> sclm_model::Result<()> {
        Ok(self.save_dir(dir)?)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl sclm_model::Family for LangCellFamily {
    fn name(&self) -> &'static str {
        NAME
    }

    fn fresh(&self, genes: Vec<String>, device: &Device) -> sclm_model::Result<Box<dyn CellModel>> {
        Ok(Box::new(LangCellModel::fresh(genes, device)?))
    }

    fn load(&self, dir: &Path, manifest: Manifest, device: &Device) -> sclm_model::Result<Box<dyn CellModel>> {
        Ok(Box::new(LangCellModel::load_with(dir, manifest, device)?))
    }
}
