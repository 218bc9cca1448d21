//! A whole pretraining run over AnnData files, as `sclm pretrain langcell` and
//! `sclm.pretrain` start it: vocabulary and text tokenizer (from a model directory, or built
//! from the data for a fresh model), labelled cells with their class texts, a seeded
//! train/validation split, both stages, and zero-shot scores of the validation cells.
use std::path::PathBuf;

use sclm_data::AnnData;
use sclm_nn::burn::tensor::Device;
use sclm_nn::train::{FitSummary, Progress};

use crate::config::LangCellConfig;
use crate::corpus::{tokenize_adata, vocabulary_from};
use crate::error::{LangCellError, Result};
use crate::family::LangCellModel;
use crate::pretrain::{batches, pretrain, PretrainConfig};
use crate::text::TextTokenizer;
use crate::zeroshot::ZeroShotOptions;

/// What a run reads and how it trains.
#[derive(Debug, Clone)]
pub struct PretrainRun {
    /// Start from this LangCell model directory (its vocabulary, tokenizers and weights);
    /// `None`: a fresh model of `config`.
    pub init: Option<PathBuf>,
    /// Architecture of a fresh model (`None`: [`LangCellConfig::small`] over the data's genes).
    pub config: Option<LangCellConfig>,
    /// Start a fresh model's text encoder (and tokenizer) from this Hugging Face BERT directory
    /// ([`crate::weights::text_encoder_from_hf`]); `None`: a fresh text encoder over a vocabulary
    /// built from the class texts.
    pub text_init: Option<PathBuf>,
    /// Longest cell input of a fresh small model, `<cls>` included (default 256).
    pub max_cell_tokens: usize,
    /// obs column of the cell-type labels.
    pub label_key: String,
    /// Layer holding raw counts (default X).
    pub layer: Option<String>,
    /// Accept non-integer values (normalised or TPM-like data: the rank-value encoding
    /// divides by each cell's total anyway).
    pub allow_non_integer: bool,
    /// `(label, text)` of every class; cells whose label has no text are left out (counted in
    /// the notes).
    pub texts: Vec<(String, String)>,
    /// Fraction of cells held out for validation and the zero-shot check (default 0.1).
    pub valid_fraction: f64,
    /// The training settings.
    pub train: PretrainConfig,
    /// Run directory (log, checkpoints).
    pub run_dir: Option<PathBuf>,
    /// Continue from the run directory's checkpoint.
    pub resume: bool,
}

impl Default for PretrainRun {
    fn default() -> Self {
        PretrainRun {
            init: None,
            config: None,
            text_init: None,
            max_cell_tokens: 256,
            label_key: "cell_type".into(),
            layer: None,
            allow_non_integer: false,
            texts: Vec::new(),
            valid_fraction: 0.1,
            train: PretrainConfig::default(),
            run_dir: None,
            resume: false,
        }
    }
}

/// What a run produced.
pub struct PretrainOutcome {
    /// The trained model.
    pub model: LangCellModel,
    /// Epochs and steps.
    pub summary: FitSummary,
    /// Facts worth telling (vocabulary, cells left out, truncated texts, the split).
    pub notes: Vec<String>,
    /// Zero-shot accuracy and macro-F1 (α = 0.2) of the validation cells, when there are any.
    pub zero_shot_valid: Option<(f64, f64)>,
}

/// Runs [`PretrainRun`] over `datasets` on `device` (an autodiff device).
pub fn pretrain_datasets(
    datasets: &[(String, &AnnData)],
    run: &PretrainRun,
    device: &Device,
    progress: &mut dyn Progress,
) -> Result<PretrainOutcome> {
    if datasets.is_empty() {
        return Err(LangCellError::Input("no training data".into()));
    }
    if run.texts.is_empty() {
        return Err(LangCellError::Input("no class texts".into()));
    }
    if run.init.is_some() && (run.config.is_some() || run.text_init.is_some()) {
        return Err(LangCellError::Config(
            "a run from a model directory (init) takes its architecture and text encoder from it: \
             config and text_init apply to fresh models only"
                .into(),
        ));
    }
    if !(0.0..0.9).contains(&run.valid_fraction) {
        return Err(LangCellError::Input(format!("valid_fraction {} not in [0, 0.9)", run.valid_fraction)));
    }
    let mut notes = Vec::new();
    let class_names: Vec<String> = run.texts.iter().map(|t| t.0.clone()).collect();
    let class_texts: Vec<String> = run.texts.iter().map(|t| t.1.clone()).collect();
    // Vocabulary, tokenizers and the starting weights.
    let (start, genes, text_tok) = match &run.init {
        Some(dir) => {
            let m = LangCellModel::load(dir, &sclm_nn::cpu_device())?;
            let lc = m.model().copy_to(device)?;
            (lc, m.gene_tokenizer().clone(), m.text_tokenizer().clone())
        }
        None => {
            let all: Vec<&AnnData> = datasets.iter().map(|d| d.1).collect();
            let max_tokens = run.config.as_ref().map_or(run.max_cell_tokens, |c| c.max_cell_tokens);
            let (genes, dropped) = vocabulary_from(&all, max_tokens)?;
            notes.push(format!(
                "vocabulary: {} genes with a median ({dropped} never expressed, left out)",
                genes.genes().len()
            ));
            let mut cfg = match &run.config {
                Some(c) => c.clone(),
                None => LangCellConfig {
                    max_cell_tokens: run.max_cell_tokens,
                    ..LangCellConfig::small(genes.genes().len(), 8)
                },
            };
            cfg.cell.vocab_size = genes.vocab_size();
            if cfg.cell.max_position_embeddings < cfg.max_cell_tokens {
                cfg.cell.max_position_embeddings = cfg.max_cell_tokens;
            }
            sclm_nn::seed_everything(run.train.seed, device);
            match &run.text_init {
                Some(dir) => {
                    let (bert, text, report, fresh) =
                        crate::weights::text_encoder_from_hf(dir, cfg.cell.hidden_size, device)?;
                    notes.push(format!(
                        "text encoder from {}: {}; {} cross-attention tensors started fresh",
                        dir.display(),
                        report.summary(),
                        fresh.len()
                    ));
                    cfg.text = bert.config().clone();
                    let mut lc = cfg.init(device)?;
                    lc.text_bert = bert;
                    (lc, genes, text)
                }
                None => {
                    let text_positions = cfg.text.max_position_embeddings;
                    let text = TextTokenizer::from_texts(&class_texts, text_positions)?;
                    cfg.text.vocab_size = text.vocab_size();
                    (cfg.init(device)?, genes, text)
                }
            }
        }
    };
    let text_ids: Vec<Vec<u32>> = class_texts
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let e = text_tok.encode(t)?;
            if e.truncated > 0 {
                notes.push(format!(
                    "text of '{}' cut by {} tokens to the text encoder's positions",
                    class_names[i], e.truncated
                ));
            }
            Ok(e.ids)
        })
        .collect::<Result<_>>()?;
    // Labelled cells.
    let (mut cells, mut labels) = (Vec::new(), Vec::new());
    let mut unlabeled = 0;
    for (name, ad) in datasets {
        let col =
            ad.obs.column(&run.label_key, "obs column").map_err(|e| LangCellError::Input(format!("{name}: {e}")))?;
        let lab = col.to_labels();
        let (toks, matched) = tokenize_adata(&genes, ad, run.layer.as_deref(), run.allow_non_integer)
            .map_err(|e| LangCellError::Input(format!("{name}: {e}")))?;
        notes.push(format!("{name}: {}", matched.report()));
        for (t, l) in toks.into_iter().zip(lab) {
            match class_names.iter().position(|c| *c == l) {
                Some(k) => {
                    cells.push(t);
                    labels.push(k);
                }
                None => unlabeled += 1,
            }
        }
    }
    if unlabeled > 0 {
        notes.push(format!("{unlabeled} cells whose label has no text were left out"));
    }
    if cells.len() < 4 {
        return Err(LangCellError::Input(format!("only {} labelled cells with a class text", cells.len())));
    }
    // Seeded split.
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut order: Vec<usize> = (0..cells.len()).collect();
    order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(run.train.seed ^ 0x5917));
    let n_valid = ((cells.len() as f64) * run.valid_fraction).round() as usize;
    let (valid_idx, train_idx) = order.split_at(n_valid);
    let take = |idx: &[usize]| -> (Vec<Vec<u32>>, Vec<usize>) {
        (idx.iter().map(|&i| cells[i].clone()).collect(), idx.iter().map(|&i| labels[i]).collect())
    };
    let (tr_c, tr_l) = take(train_idx);
    let (va_c, va_l) = take(valid_idx);
    notes.push(format!(
        "{} training cells, {} validation cells, {} classes",
        tr_c.len(),
        va_c.len(),
        class_names.len()
    ));
    let train = batches(&tr_c, &tr_l, &text_ids, run.train.batch_size, run.train.seed);
    let valid = if va_c.len() >= 2 {
        batches(&va_c, &va_l, &text_ids, run.train.batch_size, run.train.seed ^ 1)
    } else {
        Vec::new()
    };
    let (trained, summary) = pretrain(start, &train, &valid, &run.train, run.run_dir.as_deref(), run.resume, progress)?;
    let model = LangCellModel::new(trained, genes, text_tok, sclm_nn::cpu_device())?;
    let zero_shot_valid = if va_c.is_empty() {
        None
    } else {
        let ct = model.class_texts(&class_texts)?;
        let s = model.zero_shot_tokens(&va_c, &ct, &ZeroShotOptions::default())?;
        let pred = s.predictions(crate::zeroshot::DEFAULT_ALPHA);
        let acc = pred.iter().zip(&va_l).filter(|(p, y)| p == y).count() as f64 / va_l.len() as f64;
        Some((acc, sclm_eval::metrics::f1_macro(&va_l, &pred).unwrap_or(0.0)))
    };
    Ok(PretrainOutcome { model, summary, notes, zero_shot_valid })
}
