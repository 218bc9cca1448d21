//! Measures write and read throughput of the streaming writer and the row reader.
//!
//! ```text
//! cargo run --release -p sclm-io --example throughput -- OUT.h5ad [N_CELLS] [N_GENES] [DENSITY] [GZIP]
//! ```
//! Writes N_CELLS × N_GENES CSR with about DENSITY non-zeros (chunks of 10,000 rows), then
//! reads it back in blocks of 10,000 rows, printing timings and rates. With the environment
//! variable `SCLM_THROUGHPUT_WHOLE` set, also times `read_h5ad` and `write_h5ad` of the whole file.

use std::time::Instant;

use sclm_data::{AnnData, CsrMatrix, DataFrame, Matrix};
use sclm_io::{H5adRowReader, H5adStreamWriter, WriteOptions};

/// CPU seconds (user + system) used by this process so far, where /proc is available.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let out = a.first().ok_or("usage: throughput OUT [N_CELLS] [N_GENES] [DENSITY] [GZIP]")?;
    let n: usize = a.get(1).map(|s| s.parse()).transpose()?.unwrap_or(100_000);
    let g: usize = a.get(2).map(|s| s.parse()).transpose()?.unwrap_or(20_000);
    let density: f64 = a.get(3).map(|s| s.parse()).transpose()?.unwrap_or(0.1);
    let gzip: Option<u32> = a.get(4).map(|s| s.parse()).transpose()?;
    let block = 10_000.min(n);
    // One block of rows, reused (generation is not what is measured).
    let step = (1.0 / density).round().max(1.0) as usize;
    let mut indptr = vec![0usize];
    let mut indices = Vec::new();
    let mut data = Vec::new();
    for i in 0..block {
        let mut j = i % step;
        while j < g {
            indices.push(j as u32);
            data.push(((i + j) % 17 + 1) as f32);
            j += step;
        }
        indptr.push(indices.len());
    }
    let chunk = CsrMatrix::new(block, g, indptr, indices, data)?;
    let mut template = AnnData::new(Matrix::Csr(CsrMatrix::zeros(n, g)));
    template.obs = DataFrame::new((0..n).map(|i| format!("cell{i}")).collect());
    let c0 = cpu_seconds();
    let t = Instant::now();
    let mut w = H5adStreamWriter::create(out, &template, &WriteOptions { compression: gzip })?;
    let mut rows = 0;
    let mut nnz = 0usize;
    while rows < n {
        let take = block.min(n - rows);
        let c = if take == block { chunk.clone() } else { chunk.select_rows(&(0..take).collect::<Vec<_>>()) };
        nnz += c.nnz();
        w.append(&c)?;
        rows += take;
    }
    w.finish()?;
    let wt = t.elapsed().as_secs_f64();
    let wc = cpu_seconds().zip(c0).map(|(a, b)| a - b);
    let bytes = std::fs::metadata(out)?.len() as f64;
    println!(
        "write: {n} x {g}, nnz {nnz}, gzip {gzip:?}: {wt:.2} s wall ({} CPU), {:.0} cells/s, {:.1} M nnz/s, file {:.0} MB ({:.0} MB/s)",
        wc.map(|c| format!("{c:.2} s")).unwrap_or_else(|| "?".into()),
        n as f64 / wt,
        nnz as f64 / wt / 1e6,
        bytes / 1e6,
        bytes / 1e6 / wt
    );
    let c0 = cpu_seconds();
    let t = Instant::now();
    let r = H5adRowReader::open(out)?;
    let mut got = 0usize;
    let mut s = 0;
    while s < r.n_obs() {
        let e = (s + block).min(r.n_obs());
        got += r.read_rows(s, e)?.stored();
        s = e;
    }
    let rt = t.elapsed().as_secs_f64();
    assert_eq!(got, nnz);
    let rc = cpu_seconds().zip(c0).map(|(a, b)| a - b);
    println!(
        "read (row reader, blocks of {block}): {rt:.2} s wall ({} CPU), {:.0} cells/s, {:.1} M nnz/s",
        rc.map(|c| format!("{c:.2} s")).unwrap_or_else(|| "?".into()),
        n as f64 / rt,
        nnz as f64 / rt / 1e6
    );
    if std::env::var_os("SCLM_THROUGHPUT_WHOLE").is_some() {
        let c0 = cpu_seconds();
        let t = Instant::now();
        let a = sclm_io::read_h5ad(out)?;
        let (rt, rc) = (t.elapsed().as_secs_f64(), cpu_seconds().zip(c0).map(|(a, b)| a - b));
        let c0 = cpu_seconds();
        let t = Instant::now();
        let out2 = format!("{out}.whole.h5ad");
        sclm_io::write_h5ad(&a, &out2, &WriteOptions { compression: gzip })?;
        let (wt, wc) = (t.elapsed().as_secs_f64(), cpu_seconds().zip(c0).map(|(a, b)| a - b));
        std::fs::remove_file(&out2)?;
        let f = |c: Option<f64>| c.map(|c| format!("{c:.2} s")).unwrap_or_else(|| "?".into());
        println!("read_h5ad whole: {rt:.2} s wall ({} CPU); write_h5ad whole: {wt:.2} s wall ({} CPU)", f(rc), f(wc));
    }
    Ok(())
}
