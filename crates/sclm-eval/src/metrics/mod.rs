//! Metrics: classification, regression/imputation, clustering and integration.

pub mod classification;
pub mod clustering;
pub mod integration;
pub mod regression;

pub use classification::*;
pub use clustering::*;
pub use integration::*;
pub use regression::*;
