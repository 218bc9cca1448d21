//! Which model a protocol runs: a given one (pretrained, imported, fine-tuned) or a fresh one
//! of a family, built by the protocol over the genes it selects.
use sclm_model::{CellModel, Family};
use sclm_nn::burn::tensor::Device;

use crate::error::Result;

/// The model of a protocol.
#[derive(Clone, Copy)]
pub enum ModelChoice<'a> {
    /// A loaded model: the protocol reads the data through its vocabulary.
    Given(&'a dyn CellModel),
    /// A fresh model of this family over the genes the protocol selects (its small CPU preset).
    Fresh(&'a dyn Family),
}

impl ModelChoice<'_> {
    /// The model's vocabulary, when it is given.
    pub fn genes(&self) -> Option<&[String]> {
        match self {
            ModelChoice::Given(m) => Some(m.genes()),
            ModelChoice::Fresh(_) => None,
        }
    }

    /// The family name.
    pub fn family(&self) -> &str {
        match self {
            ModelChoice::Given(m) => m.family(),
            ModelChoice::Fresh(f) => f.name(),
        }
    }

    /// Whether the model is fresh.
    pub fn is_fresh(&self) -> bool {
        matches!(self, ModelChoice::Fresh(_))
    }

    /// The given model, or a fresh one over `genes`.
    pub fn resolve<'m>(
        &'m self,
        genes: &[String],
        device: &Device,
        slot: &'m mut Option<Box<dyn CellModel>>,
    ) -> Result<&'m dyn CellModel> {
        match self {
            ModelChoice::Given(m) => Ok(*m),
            ModelChoice::Fresh(f) => {
                *slot = Some(f.fresh(genes.to_vec(), device)?);
                Ok(slot.as_deref().expect("just set"))
            }
        }
    }
}

/// Columns of `var` (in order) whose genes the model's vocabulary holds, through the one
/// gene-matching path; all columns for a fresh model.
pub fn columns_in_vocabulary(choice: &ModelChoice<'_>, var: &sclm_data::DataFrame) -> Result<Vec<usize>> {
    match choice.genes() {
        None => Ok((0..var.nrows()).collect()),
        Some(vocab) => {
            let (m, _) = sclm_model::GeneMapping::for_dataset(vocab, var, None)?;
            let mut cols: Vec<usize> = m.vocab_to_col().iter().flatten().copied().collect();
            cols.sort_unstable();
            cols.dedup();
            Ok(cols)
        }
    }
}
