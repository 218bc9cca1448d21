//! One module per subcommand.

pub mod annotate;
pub mod baseline;
pub mod bench;
pub mod demo;
pub mod embed;
pub mod evaluate;
pub mod finetune;
pub mod import;
pub mod info;
pub mod langcell_args;
pub mod plot;
pub mod preprocess;
pub mod pretrain;
pub mod pretrain_langcell;
pub mod retrieve;
pub mod simulate;
