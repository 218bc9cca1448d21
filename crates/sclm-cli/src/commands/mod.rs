//! One module per subcommand.

pub mod baseline;
pub mod demo;
pub mod evaluate;
pub mod info;
pub mod plot;
pub mod preprocess;
pub mod simulate;
