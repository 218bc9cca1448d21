//! placeholder (work in progress)
#![warn(missing_docs)]
