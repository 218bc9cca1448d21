//! The whole pretraining run of the edges ([`pretrain_datasets`]): on a small simulated tissue
//! the loss falls, the model directory it saves loads back with the same registry, and bad
//! settings are refused before any work.
use sclm_cellplm::pretrain_run::{pretrain_datasets, ConfigChoice, PretrainRun};
use sclm_cellplm::{CellPlmConfig, CellPlmError, CellPlmModel};
use sclm_model::CellModel;
use sclm_nn::train::NoProgress;

/// The backend generator is process-wide: tests that train hold this lock so that their random
/// streams do not interleave.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn sim(cells: usize, genes: usize, seed: u64) -> sclm_data::AnnData {
    let cfg = sclm_sim::SimConfig { n_cells: cells, n_genes: genes, seed, ..Default::default() };
    sclm_sim::simulate(&cfg).expect("simulation").adata
}

/// A tiny architecture without genes: the run fills in the union vocabulary.
fn tiny() -> CellPlmConfig {
    let mut c = CellPlmConfig::small(Vec::new());
    c.name = Some("tiny".into());
    c.enc_hid = 32;
    c.enc_head = 4;
    c.post_latent_dim = 8;
    c.qzyx_hidden = 32;
    c.dec_hid = 32;
    c
}

#[test]
fn loss_falls_and_the_saved_model_loads_back() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let (a, b) = (sim(200, 100, 7), sim(120, 80, 8));
    let named = vec![("a".to_string(), &a), ("b".to_string(), &b)];
    let tmp = tempfile::tempdir().unwrap();
    let run = PretrainRun {
        config: ConfigChoice::Config(tiny()),
        max_cells_per_group: 60,
        epochs: 12,
        lr: 3e-3,
        seed: 5,
        run_dir: Some(tmp.path().join("run")),
        ..Default::default()
    };
    let device = sclm_nn::train_device();
    let out = pretrain_datasets(&named, &run, &device, &mut NoProgress).unwrap();
    assert_eq!(out.summary.epochs, 12);
    assert_eq!(out.epochs.len(), 12);
    let (first, last) = (out.epochs[0].train_loss, out.epochs[11].train_loss);
    eprintln!("loss {first:.2} -> {last:.2}");
    assert!(last < first, "loss {first:.2} -> {last:.2}");
    assert!(out.loss_line().unwrap().starts_with("trained 12 epochs"), "{:?}", out.loss_line());
    // One gene report per dataset, then the model line.
    assert_eq!(out.notes.len(), 3, "{:?}", out.notes);
    assert!(out.notes[0].starts_with("a: ") && out.notes[1].starts_with("b: "), "{:?}", out.notes);
    assert!(out.notes[2].starts_with("CellPLM tiny: "), "{:?}", out.notes);
    assert!(tmp.path().join("run/log.jsonl").exists());

    // The union vocabulary, covariate tables sized to the data, and the registry.
    let plm = out.model.plm();
    assert_eq!(plm.genes(), sclm_cellplm::union_vocabulary(&named).as_slice());
    let reg = out.model.manifest().registry.clone();
    assert_eq!(
        (reg.gene_id.as_str(), reg.group_key.as_str(), reg.spatial_key.as_str()),
        ("var_index", "batch", "spatial")
    );
    assert!(
        reg.batch_labels.iter().any(|l| l.starts_with("a/")) && reg.batch_labels.iter().any(|l| l.starts_with("b/"))
    );
    assert_eq!(reg.dataset_labels, ["a", "b"]);
    assert_eq!(plm.config().batch_num, reg.batch_labels.len());
    assert_eq!(plm.config().dataset_num, 2);

    let dir = tmp.path().join("model");
    out.model.save(&dir).unwrap();
    let back = CellPlmModel::load(&dir, &sclm_nn::cpu_device()).unwrap();
    assert_eq!(back.manifest().registry, reg);
    assert_eq!(back.manifest().kind, sclm_model::ModelKind::Pretrained);
    assert_eq!(back.genes(), out.model.genes());
    let (mut p1, mut p2) = (out.model.plm().clone(), back.plm().clone());
    let (sd1, sd2) = (p1.to_state_dict().unwrap(), p2.to_state_dict().unwrap());
    for (k, t) in sd1.iter() {
        assert_eq!(t.to_f32_vec(), sd2.get(k).unwrap().to_f32_vec(), "{k}");
    }
}

#[test]
fn one_dataset_has_no_dataset_table_and_a_run_repeats() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let a = sim(120, 60, 3);
    let named = vec![("only".to_string(), &a)];
    let run = PretrainRun { config: ConfigChoice::Config(tiny()), epochs: 1, seed: 9, ..Default::default() };
    let train = || {
        let device = sclm_nn::train_device();
        pretrain_datasets(&named, &run, &device, &mut NoProgress).unwrap()
    };
    let (x, y) = (train(), train());
    assert!(x.model.manifest().registry.dataset_labels.is_empty());
    assert_eq!(x.model.plm().config().dataset_num, 0);
    let (mut p1, mut p2) = (x.model.plm().clone(), y.model.plm().clone());
    let (sd1, sd2) = (p1.to_state_dict().unwrap(), p2.to_state_dict().unwrap());
    for (k, t) in sd1.iter() {
        assert_eq!(t.to_f32_vec(), sd2.get(k).unwrap().to_f32_vec(), "{k}");
    }
}

#[test]
fn bad_settings_are_refused() {
    let a = sim(40, 30, 1);
    let device = sclm_nn::train_device();
    let fails = |named: &[(String, &sclm_data::AnnData)], run: PretrainRun| {
        pretrain_datasets(named, &run, &device, &mut NoProgress).err().expect("an error")
    };
    let one = vec![("a".to_string(), &a)];
    let base = PretrainRun { config: ConfigChoice::Config(tiny()), ..Default::default() };
    assert!(
        matches!(fails(&one, PretrainRun { epochs: 0, ..base.clone() }), CellPlmError::Config(m) if m.contains("epochs"))
    );
    assert!(
        matches!(fails(&one, PretrainRun { lr: 0.0, ..base.clone() }), CellPlmError::Config(m) if m.contains("lr"))
    );
    assert!(matches!(
        fails(&one, PretrainRun { weight_decay: f64::NAN, ..base.clone() }),
        CellPlmError::Config(m) if m.contains("weight_decay")
    ));
    assert!(matches!(
        fails(&one, PretrainRun { mask_node_rate: 1.5, ..base.clone() }),
        CellPlmError::Config(m) if m.contains("mask_node_rate")
    ));
    assert!(
        matches!(fails(&one, PretrainRun { resume: true, ..base.clone() }), CellPlmError::Config(m) if m.contains("run directory"))
    );
    assert!(matches!(fails(&[], base.clone()), CellPlmError::Input(_)));
    let twice = vec![("a".to_string(), &a), ("a".to_string(), &a)];
    assert!(matches!(fails(&twice, base.clone()), CellPlmError::Input(m) if m.contains("'a'")));
}

#[test]
fn config_choices_by_name() {
    assert_eq!(ConfigChoice::from_name_or_file("small"), ConfigChoice::Small);
    assert_eq!(ConfigChoice::from_name_or_file("85m"), ConfigChoice::Published85m);
    assert_eq!(ConfigChoice::from_name_or_file("c.json"), ConfigChoice::File("c.json".into()));
    let d = PretrainRun::default();
    assert_eq!((d.epochs, d.lr, d.weight_decay, d.max_cells_per_group), (20, 3e-4, 1e-8, 128));
    assert_eq!((d.mask_node_rate, d.mask_feature_rate, d.drop_node_rate), (0.75, 0.25, 0.3));
}

#[test]
fn a_json_file_without_genes_takes_the_union_vocabulary() {
    let _guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let a = sim(60, 40, 2);
    let named = vec![("a".to_string(), &a)];
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("tiny.json");
    std::fs::write(&file, tiny().to_json()).unwrap();
    let run = PretrainRun { config: ConfigChoice::File(file), epochs: 1, ..Default::default() };
    let out = pretrain_datasets(&named, &run, &sclm_nn::train_device(), &mut NoProgress).unwrap();
    assert_eq!(out.model.genes(), a.var.index.as_slice());
    assert_eq!(out.model.plm().config().out_dim, 40);
}
