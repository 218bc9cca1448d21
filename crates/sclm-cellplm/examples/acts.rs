//! Prints, for a model directory and an .h5ad file, the spread across cells of every
//! intermediate activation of one group (a diagnostic for collapsed representations).
//! Usage: `cargo run --example acts -- MODEL_DIR DATA.h5ad [CELLS]`
use sclm_cellplm::{CellPlm, GeneMapping};
use sclm_nn::embedding::CsrRows;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let device = sclm_nn::cpu_device();
    let (model, _) = CellPlm::load_dir(&args[1], &device)?;
    let a = sclm_io::read_h5ad(&args[2])?;
    let n: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(300).min(a.n_obs());
    let (map, _) = GeneMapping::for_dataset(model.genes(), &a.var, None)?;
    let (p, idx, val) = map.remap(&a.x.to_csr(), &(0..n).collect::<Vec<_>>());
    let counts = CsrRows::new(model.genes().len(), &p, &idx, &val)?;
    let out =
        model.forward(&sclm_cellplm::GroupInput { counts, coords: None, covariates: Default::default() }, true)?;
    for (name, t) in &out.activations {
        let [r, c] = t.dims();
        let v = sclm_cellplm::model::to_vec(t.clone());
        let mut across = 0.0;
        let mut within = 0.0;
        for j in 0..c {
            let m: f64 = (0..r).map(|i| v[i * c + j] as f64).sum::<f64>() / r as f64;
            across += ((0..r).map(|i| (v[i * c + j] as f64 - m).powi(2)).sum::<f64>() / r as f64).sqrt();
        }
        for i in 0..r {
            let m: f64 = (0..c).map(|j| v[i * c + j] as f64).sum::<f64>() / c as f64;
            within += ((0..c).map(|j| (v[i * c + j] as f64 - m).powi(2)).sum::<f64>() / c as f64).sqrt();
        }
        println!("{name:<28} std across cells {:.5}  std within cell {:.5}", across / c as f64, within / r as f64);
    }
    Ok(())
}
