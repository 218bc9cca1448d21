//! Pretraining learns: on a small simulated tissue the masked-cell loss falls, resuming from a
//! checkpoint continues exactly, and datasets with different gene panels train together.
use sclm_cellplm::pretrain::{corpus_gene_stats, pretrain, Corpus, CorpusOptions, MaskConfig, PretrainConfig};
use sclm_cellplm::{union_vocabulary, CellPlm, CellPlmConfig};
use sclm_nn::train::NoProgress;

/// The backend generator is process-wide: tests that train hold this lock so that their random
/// streams do not interleave (which would make the runs depend on scheduling).
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sim(cells: usize, genes: usize, seed: u64) -> sclm_data::AnnData {
    let cfg = sclm_sim::SimConfig { n_cells: cells, n_genes: genes, seed, ..Default::default() };
    sclm_sim::simulate(&cfg).expect("simulation").adata
}

fn tiny(genes: Vec<String>, batches: usize) -> CellPlmConfig {
    let mut c = CellPlmConfig::small(genes);
    c.enc_hid = 32;
    c.enc_head = 4;
    c.post_latent_dim = 8;
    c.qzyx_hidden = 32;
    c.dec_hid = 32;
    c.batch_num = batches;
    c
}

#[test]
fn masked_loss_falls_and_resume_restores() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let a = sim(240, 120, 7);
    let named = vec![("sim".to_string(), &a)];
    let genes = union_vocabulary(&named);
    let opts = CorpusOptions { max_cells_per_group: 60, ..Default::default() };
    let corpus = Corpus::build(&named, &genes, &opts, &MaskConfig::default(), true, false).unwrap();
    assert_eq!(corpus.n_cells, 240);
    assert!(corpus.groups.len() >= 4);
    let config = tiny(genes, corpus.batch_labels.len());
    let (frac, theta) = corpus_gene_stats(&corpus);
    let fresh = || {
        let device = sclm_nn::train_device();
        sclm_nn::seed_everything(3, &device);
        CellPlm::new(&config, &device).unwrap().with_decoder_init(&frac, &theta).unwrap()
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = PretrainConfig { epochs: 80, lr: 3e-3, warmup_steps: 4, ..Default::default() };
    let (trained, summary) = pretrain(fresh(), &corpus, &cfg, Some(dir.path()), false, &mut NoProgress).unwrap();
    assert_eq!(summary.epochs, 80);
    let log = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    let epochs = log.lines().filter(|l| l.contains("\"event\":\"epoch\"")).count();
    assert_eq!(epochs, 80);
    // The masked-reconstruction loss on identical masks: trained vs the initial model (which
    // already predicts each gene's mean fraction and a fitted dispersion).
    use rand::SeedableRng;
    let score = |m: &CellPlm| -> f64 {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        let mut nb = 0.0;
        for g in &corpus.groups {
            let out = m.masked_loss(g, &MaskConfig::default(), &mut rng).unwrap();
            nb += out.terms.iter().find(|(k, _)| k == "nb").unwrap().1;
        }
        nb / corpus.groups.len() as f64
    };
    use sclm_nn::burn::module::Module;
    let before = score(&fresh().valid());
    let after = score(&trained);
    eprintln!("masked NB loss {before:.2} -> {after:.2}");
    assert!(after < before * 0.98, "masked NB loss {before:.2} -> {after:.2}");

    // Resuming a finished run is a no-op that restores its weights; resuming without a
    // checkpoint is an error.
    let (mut done, _) = pretrain(fresh(), &corpus, &cfg, Some(dir.path()), true, &mut NoProgress).unwrap();
    let again = pretrain(fresh(), &corpus, &cfg, Some(dir.path()), true, &mut NoProgress).unwrap();
    let (mut again, s) = again;
    assert_eq!(s.epochs, 80);
    let (sd1, sd2) = (done.to_state_dict().unwrap(), again.to_state_dict().unwrap());
    let mut compared = 0;
    for (k, t) in sd1.iter() {
        assert_eq!(t.to_f32_vec(), sd2.get(k).unwrap().to_f32_vec(), "{k}");
        compared += 1;
    }
    assert!(compared > 10);
    let empty = tempfile::tempdir().unwrap();
    let err = pretrain(fresh(), &corpus, &cfg, Some(empty.path()), true, &mut NoProgress).unwrap_err();
    assert!(err.to_string().contains("resume"), "{err}");
}

#[test]
fn different_gene_panels_train_together_and_bad_input_is_named() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let a = sim(120, 80, 1);
    let mut b = sim(120, 80, 2);
    // The second dataset measures only half of the genes.
    let keep: Vec<usize> = (0..40).collect();
    b = b.select_vars(&keep);
    let named = vec![("full".to_string(), &a), ("panel".to_string(), &b)];
    let genes = union_vocabulary(&named);
    assert_eq!(genes.len(), 80);
    let corpus = Corpus::build(&named, &genes, &CorpusOptions::default(), &MaskConfig::default(), true, true).unwrap();
    let panels: Vec<usize> = corpus.groups.iter().map(|g| g.panel.len()).collect();
    assert!(panels.contains(&80) && panels.contains(&40), "{panels:?}");
    let mut config = tiny(genes.clone(), corpus.batch_labels.len());
    config.dataset_num = 2;
    let device = sclm_nn::train_device();
    let model = CellPlm::new(&config, &device).unwrap();
    let cfg = PretrainConfig { epochs: 2, ..Default::default() };
    pretrain(model, &corpus, &cfg, None, false, &mut NoProgress).unwrap();

    // No shared genes: the dataset is named.
    let mut c = sim(20, 30, 3);
    c.var.index = (0..30).map(|i| format!("Other{i}")).collect();
    let named = vec![("odd".to_string(), &c)];
    let err =
        Corpus::build(&named, &genes, &CorpusOptions::default(), &MaskConfig::default(), true, false).unwrap_err();
    assert!(err.to_string().contains("odd") && err.to_string().contains("vocabulary"), "{err}");
    // Normalised values: the cell and gene are named.
    let mut d = sim(20, 80, 4);
    if let sclm_data::Matrix::Csr(m) = &mut d.x {
        m.data[0] = 0.5;
    }
    let named = vec![("norm".to_string(), &d)];
    let err =
        Corpus::build(&named, &genes, &CorpusOptions::default(), &MaskConfig::default(), true, false).unwrap_err();
    assert!(err.to_string().contains("raw integer counts"), "{err}");
}
