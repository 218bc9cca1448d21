//! Lists the tensors of a PyTorch checkpoint or safetensors file and times the read.
//!
//! Usage: inspect_checkpoint FILE [KEY_PATH] [--compare OTHER.safetensors]
//! KEY_PATH selects a sub-dictionary of a torch checkpoint (e.g. `model_state_dict`; default: top level).
//! With --compare, every tensor of OTHER must be present in FILE with identical shape and values.

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() {
        eprintln!("usage: inspect_checkpoint FILE [KEY_PATH] [--compare OTHER.safetensors]");
        std::process::exit(2);
    }
    let file = &args[0];
    let mut key_path = String::new();
    let mut compare = None;
    let mut i = 1;
    while i < args.len() {
        if args[i] == "--compare" && i + 1 < args.len() {
            compare = Some(args[i + 1].clone());
            i += 2;
        } else {
            key_path = args[i].clone();
            i += 1;
        }
    }
    let t = Instant::now();
    let sd = if file.ends_with(".safetensors") {
        sclm_weights::read_safetensors(file)
    } else {
        sclm_weights::read_torch(file, &key_path)
    };
    let sd = match sd {
        Ok(sd) => sd,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let secs = t.elapsed().as_secs_f64();
    let mut total = 0usize;
    for (k, v) in &sd {
        println!("{k}\t{:?}\t{}", v.shape, v.dtype);
        total += v.numel();
    }
    println!("{} tensors, {} values, read in {:.3} s", sd.len(), total, secs);
    if let Some(other) = compare {
        let o = match sclm_weights::read_safetensors(&other) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        };
        let mut bad = 0;
        for (k, v) in &o {
            match sd.get(k) {
                Some(w) if w.shape == v.shape && w.data == v.data => {}
                _ => {
                    eprintln!("differs: {k}");
                    bad += 1;
                }
            }
        }
        println!("compared {} tensors with {other}: {bad} differ", o.len());
        if bad > 0 {
            std::process::exit(1);
        }
    }
}
