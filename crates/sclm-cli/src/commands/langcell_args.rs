//! Option groups the LangCell commands (`annotate`, `retrieve`, `pretrain langcell`) share: how
//! counts are read, and where class texts come from.

use std::path::PathBuf;

use anyhow::{bail, Result};
use sclm_data::AnnData;
use sclm_langcell::ontology::{label_texts, read_text_table, LabelTexts, Ontology};
use sclm_model::{EmbedOptions, PieceOptions};

/// How the counts of the input are read.
#[derive(Debug, Clone, clap::Args)]
pub struct CountsArgs {
    /// Layer holding the counts (default: X).
    #[arg(long, conflicts_with = "use_raw")]
    pub layer: Option<String>,
    /// Use `raw.X` and `raw.var` instead of X.
    #[arg(long)]
    pub use_raw: bool,
    /// The values are log1p of normalised counts: undo the log1p.
    #[arg(long)]
    pub log1p_input: bool,
    /// Accept non-integer values (normalised or TPM-like data).
    #[arg(long)]
    pub allow_non_integer: bool,
}

impl CountsArgs {
    /// The AnnData the model reads (`raw` taken, log1p undone, as asked).
    pub fn prepare(&self, adata: &AnnData, file: &str) -> Result<AnnData> {
        super::finetune::model_input(adata, self.use_raw, self.log1p_input, file)
    }

    /// Whether non-integer values are accepted (asked, or implied by `--log1p-input`).
    pub fn non_integer(&self) -> bool {
        self.allow_non_integer || self.log1p_input
    }

    /// The embedding options of these flags.
    pub fn embed_options(&self) -> EmbedOptions {
        EmbedOptions {
            layer: self.layer.clone(),
            pieces: PieceOptions { allow_non_integer: self.non_integer(), ..Default::default() },
            ..Default::default()
        }
    }
}

/// Where the texts of the classes (cell-type labels) come from.
#[derive(Debug, Clone, clap::Args)]
pub struct TextArgs {
    /// Cell Ontology TSV (id, name, definition, synonyms, ...): texts
    /// "cell type: {name}. {definition}" for classes that match a term by name or synonym.
    #[arg(long)]
    pub ontology: Option<PathBuf>,
    /// Your own texts: a TSV of `class<TAB>text` lines (used before the ontology).
    #[arg(long)]
    pub texts: Option<PathBuf>,
    /// Leave out classes with no text (reported) instead of failing.
    #[arg(long)]
    pub drop_unmatched: bool,
}

impl TextArgs {
    /// A text for each of `labels` (the report printed unless `quiet`); unmatched labels are an
    /// error naming them unless `--drop-unmatched`, and no text at all is an error.
    pub fn resolve(&self, labels: &[String], quiet: bool) -> Result<LabelTexts> {
        if self.ontology.is_none() && self.texts.is_none() {
            bail!("give class texts with --ontology (Cell Ontology TSV) and/or --texts (class<TAB>text)");
        }
        let onto = self.ontology.as_ref().map(|p| Ontology::read(p)).transpose()?;
        let user = self.texts.as_ref().map(|p| read_text_table(p)).transpose()?;
        let lt = label_texts(labels, user.as_ref(), onto.as_ref());
        crate::progress::note(quiet, format!("class texts:\n{}", lt.report().trim_end()));
        if !lt.unmatched.is_empty() && !self.drop_unmatched {
            bail!(
                "no text for {} class(es): {} (add them to --texts, or pass --drop-unmatched to leave them out)",
                lt.unmatched.len(),
                lt.unmatched.join(", ")
            );
        }
        if lt.matched.is_empty() {
            bail!("no class has a text");
        }
        Ok(lt)
    }
}
