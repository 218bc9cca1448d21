//! `sclm`: single-cell language models, AnnData in, AnnData out.
//!
//! This binary is a thin edge: it parses arguments, draws progress bars and prints reports.
//! Every computation is a call into the sclm libraries.

mod commands;
mod output;
mod progress;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Options every subcommand accepts.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Number of worker threads (default: all cores).
    #[arg(long, global = true)]
    pub threads: Option<usize>,
    /// Seed for every random choice (simulation, PCA, splits, training).
    #[arg(long, global = true, default_value_t = 0)]
    pub seed: u64,
    /// Print only results and errors: no progress bars or notes.
    #[arg(long, short, global = true)]
    pub quiet: bool,
    /// Where models run: `cpu` (default) or `gpu` (Vulkan; needs a build with `--features gpu`).
    #[arg(long, global = true, value_enum, default_value_t = DeviceChoice::Cpu)]
    pub device: DeviceChoice,
}

/// The compute device asked for with `--device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeviceChoice {
    /// The CPU (burn's flex backend, all `--threads`).
    Cpu,
    /// A GPU through Vulkan.
    Gpu,
}

impl Global {
    /// The device models run on.
    pub fn device(&self) -> anyhow::Result<sclm_nn::burn::tensor::Device> {
        match self.device {
            DeviceChoice::Cpu => Ok(sclm_nn::cpu_device()),
            #[cfg(feature = "gpu")]
            DeviceChoice::Gpu => Ok(sclm_nn::gpu_device()),
            #[cfg(not(feature = "gpu"))]
            DeviceChoice::Gpu => anyhow::bail!(
                "--device gpu: this sclm was built without GPU support; build it with `cargo build --release -p sclm-cli --features gpu`"
            ),
        }
    }
}

#[derive(Debug, Parser)]
#[command(name = "sclm", version, about = "Single-cell language models: AnnData in, AnnData out.")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Simulate a single-cell count dataset (Splatter-style) and write it as .h5ad.
    Simulate(commands::simulate::Args),
    /// Describe a .h5ad file or Cell Ranger output: shape, layout, X, annotations.
    Info(commands::info::Args),
    /// Run scanpy-style preprocessing steps and write the result as .h5ad.
    Preprocess(commands::preprocess::Args),
    /// Score an embedding in obsm against labels (clustering, label ASW, batch mixing, kNN accuracy).
    Evaluate(commands::evaluate::Args),
    /// Run a classical baseline (PCA, logistic regression, kNN-diffusion denoising) on a file.
    Baseline(commands::baseline::Args),
    /// Draw a 2-D scatter plot (UMAP of an embedding, or a 2-D basis) coloured by an obs key or gene.
    Plot(commands::plot::Args),
    /// Import a published checkpoint into an sclm model directory.
    Import(commands::import::ImportArgs),
    /// Pretrain a model on .h5ad files (CellPLM: masked-cell modelling; LangCell: cell-text alignment).
    #[command(subcommand)]
    Pretrain(commands::pretrain::Family),
    /// Fine-tune a model for a downstream task and score it next to its baseline.
    Finetune(commands::finetune::Args),
    /// Predict with a fine-tuned model (cell types from `finetune annotation --save-model`).
    Predict(commands::finetune::PredictArgs),
    /// Annotate cells zero-shot from class names and texts (LangCell: similarity and cell-text matching).
    Annotate(commands::annotate::Args),
    /// Find the cells that match a text (LangCell: cosine similarity in the cell-text space).
    Retrieve(commands::retrieve::Args),
    /// Embed cells with a model of any family (zero-shot) and write the embedding to obsm.
    Embed(commands::embed::Args),
    /// Speed benchmarks against the reference implementations.
    Bench(commands::bench::Args),
    /// Run the main job on the embedded default dataset: simulate, inspect, preprocess, evaluate, plot.
    Demo(commands::demo::Args),
}

/// The model families built into this binary (the manifest of a model directory names one).
pub fn families() -> [&'static dyn sclm_model::Family; 2] {
    [&sclm_cellplm::FAMILY, &sclm_langcell::FAMILY]
}

/// Opens a model directory of any family built in.
pub fn load_model(
    dir: &std::path::Path,
    device: &sclm_nn::burn::tensor::Device,
) -> anyhow::Result<Box<dyn sclm_model::CellModel>> {
    Ok(sclm_model::load_any(dir, &families(), device)?)
}

fn main() -> ExitCode {
    // A bug must still reach the user as one line, never as a Rust backtrace.
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown failure".into());
        let at = info.location().map(|l| format!(" at {}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("error: internal error (a bug in sclm, please report it): {}{at}", msg.lines().next().unwrap_or(""));
    }));
    let cli = Cli::parse();
    // Lets the tests check the hook on a real panic (tests/panic.rs).
    if std::env::var_os("SCLM_TEST_PANIC").is_some() {
        panic!("deliberate panic for the panic-hook test\nsecond line");
    }
    if let Some(n) = cli.global.threads {
        if let Err(e) = rayon::ThreadPoolBuilder::new().num_threads(n.max(1)).build_global() {
            eprintln!("error: cannot set up {n} threads: {e}");
            return ExitCode::FAILURE;
        }
    }
    let result = match cli.command {
        Command::Simulate(a) => commands::simulate::run(&cli.global, a),
        Command::Info(a) => commands::info::run(&cli.global, a),
        Command::Preprocess(a) => commands::preprocess::run(&cli.global, a),
        Command::Evaluate(a) => commands::evaluate::run(&cli.global, a),
        Command::Baseline(a) => commands::baseline::run(&cli.global, a),
        Command::Plot(a) => commands::plot::run(&cli.global, a),
        Command::Import(a) => commands::import::import(&cli.global, a),
        Command::Pretrain(f) => commands::pretrain::dispatch(&cli.global, f),
        Command::Finetune(a) => commands::finetune::run(&cli.global, a),
        Command::Predict(a) => commands::finetune::predict(&cli.global, a),
        Command::Annotate(a) => commands::annotate::run(&cli.global, a),
        Command::Retrieve(a) => commands::retrieve::run(&cli.global, a),
        Command::Embed(a) => commands::embed::run(&cli.global, a),
        Command::Bench(a) => commands::bench::run(&cli.global, a),
        Command::Demo(a) => commands::demo::run(&cli.global, a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the chain of causes joined by ": ".
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
