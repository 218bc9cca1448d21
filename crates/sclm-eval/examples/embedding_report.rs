//! Evaluates an `obsm` embedding of an h5ad file against an `obs` label column, lays it out
//! with UMAP and writes two PNG scatter plots.
//!
//! cargo run --release -p sclm-eval --example embedding_report -- \
//!     data.h5ad [obsm_key=X_pca] [label_key=bulk_labels] [out_dir=.]

use std::path::PathBuf;

use sclm_eval::neighbors::{connectivities, knn};
use sclm_eval::umap::{umap, UmapOptions};
use sclm_eval::{evaluate_embedding, scatter_png, ColorBy, EvaluateOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let path = args.first().ok_or("usage: embedding_report data.h5ad [obsm_key] [label_key] [out_dir]")?;
    let key = args.get(1).map_or("X_pca", |s| s.as_str());
    let label_key = args.get(2).map_or("bulk_labels", |s| s.as_str());
    let out = PathBuf::from(args.get(3).map_or(".", |s| s.as_str()));
    let adata = sclm_io::read_h5ad(path)?;
    let emb = adata.obsm_get(key)?.to_f32();
    let labels = adata.obs_column(label_key)?.to_labels();

    let t = std::time::Instant::now();
    let opts = EvaluateOptions { method: key.to_string(), ..Default::default() };
    let rep = evaluate_embedding(&emb, &labels, None, &opts)?;
    println!("{}", rep.to_table());
    eprintln!("evaluation: {:.2}s", t.elapsed().as_secs_f64());

    let t = std::time::Instant::now();
    let conn = connectivities(&knn(&emb, 15, true)?);
    let layout = umap(&emb, &conn, &UmapOptions::default())?;
    eprintln!("UMAP: {:.2}s", t.elapsed().as_secs_f64());
    let color = ColorBy::Categorical(labels);
    scatter_png(&layout, &color, &format!("UMAP of {key} — {label_key}"), &out.join("umap.png"))?;
    scatter_png(&emb, &color, &format!("{key} (first two components) — {label_key}"), &out.join("embedding.png"))?;
    if let Some(c) = adata.obs.get("n_counts").and_then(|c| c.to_f64()) {
        scatter_png(&layout, &ColorBy::Numeric(c), "UMAP — n_counts", &out.join("umap_numeric.png"))?;
    }
    Ok(())
}
