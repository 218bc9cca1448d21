//! The task protocols (fine-tuning, denoising, spatial imputation, perturbation, embedding
//! quality) and pretraining, over AnnData parts.
use pyo3::prelude::*;

pub(crate) fn register(_m: &Bound<'_, PyModule>) -> PyResult<()> {
    Ok(())
}
