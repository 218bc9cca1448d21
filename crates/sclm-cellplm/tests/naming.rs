//! The trainer's `checkpoint/` and `best/` hold CellPLM weights under the published PyTorch
//! state-dict names and layouts (`Trainable::weight_naming`), and resume reads them back
//! exactly: pretraining, the fine-tuning classifier (`head.weight` `[classes, latent]`) and the
//! perturbation model.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sclm_cellplm::annotate::{finetune_annotation, CellPlmClassifier, FinetuneConfig, LabeledGroup};
use sclm_cellplm::perturb::PerturbationModel;
use sclm_cellplm::pretrain::{pretrain, Corpus, CorpusOptions, MaskConfig, PretrainConfig};
use sclm_cellplm::{union_vocabulary, CellPlm, CellPlmConfig};
use sclm_nn::train::optim::param_paths;
use sclm_nn::train::{load_model_named, save_model_named, EpochReport, NoProgress, Progress, Trainable};

/// The backend generator is process-wide: every test holds this lock (building a model draws
/// from it too) so that the random streams of the training tests do not interleave.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn corpus() -> Corpus {
    let cfg = sclm_sim::SimConfig { n_cells: 48, n_genes: 24, seed: 5, ..Default::default() };
    let a = sclm_sim::simulate(&cfg).expect("simulation").adata;
    let named = vec![("sim".to_string(), &a)];
    let genes = union_vocabulary(&named);
    let opts = CorpusOptions { max_cells_per_group: 16, ..Default::default() };
    Corpus::build(&named, &genes, &opts, &MaskConfig::default(), true, false).unwrap()
}

fn config(corpus: &Corpus) -> CellPlmConfig {
    let mut c = CellPlmConfig::small(corpus.genes.clone());
    c.enc_hid = 16;
    c.enc_head = 4;
    c.enc_layers = 2;
    c.post_latent_dim = 8;
    c.qzyx_hidden = 16;
    c.num_clusters = 3;
    c.dec_hid = 16;
    c.batch_num = corpus.batch_labels.len();
    c
}

fn fresh(config: &CellPlmConfig) -> CellPlm {
    let device = sclm_nn::train_device();
    sclm_nn::seed_everything(3, &device);
    CellPlm::new(config, &device).unwrap()
}

/// Names and shapes of the tensors of a safetensors file.
fn keys(path: &Path) -> BTreeMap<String, Vec<usize>> {
    sclm_weights::read_safetensors(path).unwrap().into_iter().map(|(k, t)| (k, t.shape)).collect()
}

/// The bits of every tensor of a safetensors file.
fn bits(path: &Path) -> BTreeMap<String, Vec<u32>> {
    sclm_weights::read_safetensors(path)
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k.clone(), t.into_f32(&k).unwrap().into_iter().map(f32::to_bits).collect()))
        .collect()
}

fn sd_bits(m: &mut CellPlm) -> BTreeMap<String, Vec<u32>> {
    m.to_state_dict()
        .unwrap()
        .into_iter()
        .map(|(k, t)| (k.clone(), t.into_f32(&k).unwrap().into_iter().map(f32::to_bits).collect()))
        .collect()
}

fn expected(m: &mut CellPlm) -> BTreeMap<String, Vec<usize>> {
    m.expected_tensors().into_iter().collect()
}

/// Copies the run directory after the first epoch (its checkpoint is written before
/// `on_epoch`): the state a run interrupted after one epoch leaves behind.
struct SnapshotAfterFirstEpoch {
    run: PathBuf,
    copy: PathBuf,
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), target).unwrap();
        }
    }
}

impl Progress for SnapshotAfterFirstEpoch {
    fn on_epoch(&mut self, report: &EpochReport) {
        if report.epoch == 0 {
            copy_dir(&self.run, &self.copy);
        }
    }
}

#[test]
fn table_covers_every_parameter_of_each_model() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let corpus = corpus();
    let config = config(&corpus);
    let mut plm = CellPlm::new(&config, &sclm_nn::cpu_device()).unwrap();
    let want = expected(&mut plm);
    // CellPLM: every module path has a published name, and the names are the expected ones.
    let naming = plm.weight_naming().expect("a naming");
    let paths = param_paths(&plm);
    assert_eq!(paths.len(), want.len());
    let published: BTreeMap<String, String> = paths.iter().map(|(p, _)| (naming.published(p), p.clone())).collect();
    assert_eq!(published.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (key, path) in &published {
        assert_eq!(naming.module_path(key).as_deref(), Some(path.as_str()), "{key}");
    }
    // Torch Linear weights are stored transposed, embeddings are not.
    let q = published.get("encoder.layers.1.self_attn.query_projection.weight").expect("query projection");
    assert_eq!(q, "encoder.1.self_attn.query_projection.weight");
    assert!(naming.transposed(q), "{q}");
    assert!(!naming.transposed(published.get("embedder.feat_enc.emb").unwrap()));
    // Nested models: the module paths carry `plm.`, the published names do not.
    let pert = PerturbationModel { plm: plm.clone() };
    let naming = pert.weight_naming().expect("a naming");
    let names: Vec<String> = param_paths(&pert).iter().map(|(p, _)| naming.published(p)).collect();
    assert_eq!(names.len(), want.len());
    assert!(names.iter().all(|n| want.contains_key(n)), "{names:?}");
    let cls = CellPlmClassifier::new(plm, 3, 0.1);
    let naming = cls.weight_naming().expect("a naming");
    let mut names: Vec<String> = param_paths(&cls).iter().map(|(p, _)| naming.published(p)).collect();
    names.sort();
    let mut with_head: Vec<String> = want.keys().cloned().chain(["head.bias".into(), "head.weight".into()]).collect();
    with_head.sort();
    assert_eq!(names, with_head);
    assert!(naming.transposed("head.linear.weight"));
    assert_eq!(naming.published("head.linear.bias"), "head.bias");
}

#[test]
fn pretraining_checkpoints_use_published_names_and_resume_exactly() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let corpus = corpus();
    let config = config(&corpus);
    let cfg = PretrainConfig { epochs: 2, lr: 3e-3, warmup_steps: 1, ..Default::default() };
    let run = tempfile::tempdir().unwrap();
    let cut = tempfile::tempdir().unwrap();
    let cut_run = cut.path().join("run");
    let mut snap = SnapshotAfterFirstEpoch { run: run.path().to_path_buf(), copy: cut_run.clone() };
    let (mut full, summary) = pretrain(fresh(&config), &corpus, &cfg, Some(run.path()), false, &mut snap).unwrap();
    assert_eq!(summary.epochs, 2);
    let want = expected(&mut full);
    let ckpt = run.path().join("checkpoint").join("model.safetensors");
    assert_eq!(keys(&ckpt), want, "checkpoint tensors");
    // The checkpoint holds the final weights, in the published layout.
    assert_eq!(bits(&ckpt), sd_bits(&mut full));
    let best = run.path().join("best").join("model.safetensors");
    if best.exists() {
        assert_eq!(keys(&best), want, "best tensors");
    }
    assert_eq!(keys(&cut_run.join("checkpoint").join("model.safetensors")), want);
    let state = |dir: &Path| std::fs::read_to_string(dir.join("checkpoint").join("train_state.json")).unwrap();
    assert_ne!(state(&cut_run), state(run.path()), "the snapshot is of epoch 1");

    // Interrupted after epoch 1, resumed into a fresh model: bit-identical to the full run.
    let (mut resumed, s) = pretrain(fresh(&config), &corpus, &cfg, Some(&cut_run), true, &mut NoProgress).unwrap();
    assert_eq!(s.epochs, 2);
    assert_eq!(sd_bits(&mut resumed), sd_bits(&mut full), "resumed weights differ");
    assert_eq!(bits(&cut_run.join("checkpoint").join("model.safetensors")), bits(&ckpt));
    assert_eq!(state(&cut_run), state(run.path()));
}

fn labeled(corpus: &Corpus) -> Vec<LabeledGroup> {
    corpus
        .groups
        .iter()
        .map(|g| LabeledGroup { group: g.clone(), labels: (0..g.n_cells()).map(|i| Some(i % 3)).collect() })
        .collect()
}

#[test]
fn classifier_checkpoint_holds_published_backbone_and_torch_head() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let corpus = corpus();
    let config = config(&corpus);
    let batches = labeled(&corpus);
    let (train, valid) = batches.split_at(batches.len() - 1);
    let classifier = || CellPlmClassifier::new(fresh(&config), 3, 0.1);
    let latent = classifier().plm.latent_dim();
    let mut want = expected(&mut fresh(&config));
    want.insert("head.weight".into(), vec![3, latent]);
    want.insert("head.bias".into(), vec![3]);
    let mut cfg = FinetuneConfig::default();
    cfg.recipe.epochs = 2;
    let full = tempfile::tempdir().unwrap();
    let (mut best, _) =
        finetune_annotation(classifier(), train, valid, &cfg, Some(full.path()), false, &mut NoProgress).unwrap();
    for sub in ["checkpoint", "best"] {
        assert_eq!(keys(&full.path().join(sub).join("model.safetensors")), want, "{sub}");
    }
    // `best/` holds the returned model: the head in torch layout, the backbone as published.
    let stored = bits(&full.path().join("best").join("model.safetensors"));
    let (w, b) = best.head.to_parts();
    assert_eq!(stored["head.weight"], w.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    assert_eq!(stored["head.bias"], b.iter().map(|v| v.to_bits()).collect::<Vec<_>>());
    for (k, v) in sd_bits(&mut best.plm) {
        assert_eq!(stored[&k], v, "{k}");
    }

    // One epoch, then resumed to two: the same checkpoint and best model as the full run.
    let cut = tempfile::tempdir().unwrap();
    let mut one = cfg.clone();
    one.recipe.epochs = 1;
    finetune_annotation(classifier(), train, valid, &one, Some(cut.path()), false, &mut NoProgress).unwrap();
    let (mut again, s) =
        finetune_annotation(classifier(), train, valid, &cfg, Some(cut.path()), true, &mut NoProgress).unwrap();
    assert_eq!(s.epochs, 2);
    for sub in ["checkpoint", "best"] {
        let f = |d: &Path| bits(&d.join(sub).join("model.safetensors"));
        assert_eq!(f(cut.path()), f(full.path()), "{sub} differs after resume");
    }
    assert_eq!(again.head.to_parts(), best.head.to_parts());
    assert_eq!(sd_bits(&mut again.plm), sd_bits(&mut best.plm));
}

#[test]
fn perturbation_weights_round_trip_under_published_names() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let corpus = corpus();
    let mut config = config(&corpus);
    config.dec_mod = sclm_cellplm::DecoderKind::Mlp;
    let device = sclm_nn::cpu_device();
    let mut model = PerturbationModel { plm: CellPlm::new(&config, &device).unwrap() };
    let naming = model.weight_naming();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    save_model_named(&model, &path, naming.as_ref()).unwrap();
    assert_eq!(keys(&path), expected(&mut model.plm));
    assert_eq!(bits(&path), sd_bits(&mut model.plm));
    let other = PerturbationModel { plm: CellPlm::new(&config, &device).unwrap() };
    let naming = other.weight_naming();
    let (mut loaded, report) = load_model_named(other, &path, naming.as_ref()).unwrap();
    assert!(report.missing.is_empty() && report.unused.is_empty(), "{report:?}");
    assert_eq!(sd_bits(&mut loaded.plm), sd_bits(&mut model.plm));
}
