//! Fine-tuned annotation through the model layer: a fresh LangCell fine-tuned on simulated cells
//! classifies held-out cells (macro-F1 printed next to logistic regression on PCA of the same
//! split; asserted far above chance), and the classifier saves and reloads to the same
//! predictions. Own test binary: the backend generator is process-wide.
use sclm_langcell::{LangCellModel, FAMILY};
use sclm_model::{CellModel, EmbedOptions, Family, FinetuneRecipe, LabeledCells, PieceOptions, RunOptions};
use sclm_nn::train::NoProgress;

#[test]
fn fresh_model_learns_to_annotate_and_reloads() {
    let cfg = sclm_sim::SimConfig {
        n_cells: 320,
        n_genes: 200,
        n_types: 4,
        n_batches: 1,
        type_probs: vec![1.0; 4],
        de_prob: 0.3,
        de_loc: 2.0,
        seed: 4,
        ..Default::default()
    };
    let adata = sclm_sim::simulate(&cfg).unwrap().adata;
    let types = adata.obs.column("cell_type", "obs").unwrap().to_labels();
    let mut classes = types.clone();
    classes.sort();
    classes.dedup();
    let labels: Vec<Option<usize>> = types.iter().map(|t| classes.iter().position(|c| c == t)).collect();
    let test: Vec<usize> = (0..320).filter(|i| i % 4 == 0).collect();
    let valid: Vec<usize> = (0..320).filter(|i| i % 4 == 1).collect();
    let train: Vec<usize> = (0..320).filter(|i| i % 4 >= 2).collect();
    let dev = sclm_nn::cpu_device();
    sclm_nn::seed_everything(2, &dev);
    let fresh = FAMILY.fresh(adata.var.index.clone(), &dev).unwrap();
    let opts = EmbedOptions { pieces: PieceOptions::default(), ..Default::default() };
    let cells =
        LabeledCells { adata: &adata, opts: &opts, classes: &classes, labels: &labels, train: &train, valid: &valid };
    let recipe = FinetuneRecipe { epochs: 8, seed: 3, ..Default::default() };
    let (clf, summary) = fresh
        .finetune_classifier(&cells, &recipe, &RunOptions::default(), &sclm_nn::train_device(), &mut NoProgress)
        .unwrap();
    assert!(summary.epochs >= 1);
    let (pred, _, _) = sclm_model::predict(clf.as_ref(), &adata, &opts, &mut |_| {}).unwrap();
    let y: Vec<String> = test.iter().map(|&i| types[i].clone()).collect();
    let p: Vec<String> = test.iter().map(|&i| pred[i].clone()).collect();
    let f1 = sclm_eval::metrics::f1_macro(&y, &p).unwrap();
    let lognorm = sclm_eval::baselines::log_normalize(&adata.x).unwrap();
    let (pca, _) = sclm_eval::baselines::pca_embedding(&lognorm, 30, None, 0).unwrap();
    let split = sclm_eval::protocols::Split { train: train.clone(), valid: vec![], test: test.clone() };
    let rep = sclm_eval::baselines::annotation_baseline(&pca, &types, &split, "PCA + LR", &Default::default()).unwrap();
    let lr = rep.metrics.iter().find(|m| m.name == "macro_F1").unwrap().value.unwrap();
    eprintln!("fine-tuned fresh LangCell: macro-F1 {f1:.3} on {} held-out cells; PCA + logistic regression {lr:.3}; chance 0.25", test.len());
    assert!(f1 > 0.7, "macro-F1 {f1}");
    // Save, reload, same predictions.
    let tmp = tempfile::tempdir().unwrap();
    clf.save(&tmp.path().join("clf")).unwrap();
    let back = LangCellModel::load(tmp.path().join("clf"), &dev).unwrap();
    assert_eq!(back.manifest().classes, classes);
    let (pred2, _, _) = sclm_model::predict(&back, &adata, &opts, &mut |_| {}).unwrap();
    assert_eq!(pred, pred2);
}
