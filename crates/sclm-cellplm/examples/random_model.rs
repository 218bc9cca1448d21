//! Writes a model directory with random weights in the small architecture
//! ([`sclm_cellplm::CellPlmConfig::small`]) over a given vocabulary, e.g. to measure embedding
//! throughput and memory on simulated data whose gene names no published model knows.
//!
//! Usage: `cargo run -p sclm-cellplm --example random_model -- GENES_TXT OUT_DIR`
//! (`GENES_TXT`: one gene identifier per line).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(genes), Some(out)) = (args.get(1), args.get(2)) else {
        return Err("usage: random_model GENES_TXT OUT_DIR".into());
    };
    let genes: Vec<String> =
        std::fs::read_to_string(genes)?.lines().filter(|l| !l.is_empty()).map(String::from).collect();
    let config = sclm_cellplm::CellPlmConfig::small(genes);
    let mut model = sclm_cellplm::CellPlm::new(&config, &sclm_nn::cpu_device())?;
    model.save_dir(out)?;
    println!("wrote {out}: {} genes, {} parameters", config.gene_list.len(), model.num_params());
    Ok(())
}
