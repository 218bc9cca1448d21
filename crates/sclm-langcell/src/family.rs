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
use sclm_model::{CellModel, Manifest, ModelKind, PieceEmbedder, Registry};
use sclm_nn::burn;
use sclm_nn::burn::tensor::Device;
use sclm_nn::embedding::CsrRows;

use crate::error::{LangCellError, Result};
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
        if manifest.kind != ModelKind::Pretrained {
            return Err(LangCellError::Config(format!(
                "{}: LangCell {:?} directories are not supported yet",
                dir.display(),
                manifest.kind
            )));
        }
        let (model, genes, text) = read_files(dir, device)?;
        Ok(LangCellModel { manifest, model, genes, text, device: device.clone() })
    }

    /// Saves the model directory (atomic).
    pub fn save_dir(&self, dir: &Path) -> Result<()> {
        let mut m = self.model.clone();
        sclm_model::save_atomic(dir, |tmp| {
            write_files(tmp, &self.manifest, &mut m, &self.genes, &self.text).map_err(Into::into)
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

    fn load(&self, dir: &Path, manifest: Manifest, device: &Device) -> sclm_model::Result<Box<dyn CellModel>> {
        Ok(Box::new(LangCellModel::load_with(dir, manifest, device)?))
    }
}
