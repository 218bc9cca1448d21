//! Baselines on the real pbmc68k_reduced file (ignored by default: needs the shared data).
//! cargo test -p sclm-eval --release --test real_data -- --ignored --nocapture

use sclm_eval::baselines::{pca_baseline, PcaBaselineOptions};
use sclm_eval::{evaluate_embedding, EvaluateOptions};

const PBMC: &str = "../../../shared/data/pbmc68k_reduced.h5ad";

#[test]
#[ignore]
fn pbmc68k_reduced_baselines() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(PBMC);
    let adata = sclm_io::read_h5ad(&path).expect("pbmc68k_reduced.h5ad");
    let labels = adata.obs_column("bulk_labels").unwrap().to_labels();
    // Stored X_pca (scanpy's, on the scaled data).
    let stored = adata.obsm_get("X_pca").unwrap().to_f32();
    let r = evaluate_embedding(
        &stored,
        &labels,
        None,
        &EvaluateOptions { method: "stored X_pca".into(), ..Default::default() },
    )
    .unwrap();
    println!("{}", r.to_table());
    // Our PCA of the log-normalised raw matrix (765 genes: all kept).
    let raw = &adata.raw.as_ref().expect("raw").x;
    for n_comps in [50, 512] {
        let (_, reps) =
            pca_baseline(raw, &labels, None, &PcaBaselineOptions { n_comps, ..Default::default() }).unwrap();
        for rep in &reps {
            println!("{}", rep.to_table());
        }
        assert!(reps[0].get("ARI").unwrap() > 0.3 && reps[1].get("macro_F1").unwrap() > 0.4);
    }
    assert!(r.get("ARI").unwrap() > 0.3);
}
