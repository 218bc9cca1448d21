//! Unstructured metadata (`uns`).

use std::collections::BTreeMap;

/// A value in `uns`: scalars, arrays and nested mappings.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string scalar.
    Str(String),
    /// A float scalar.
    F64(f64),
    /// An integer scalar.
    I64(i64),
    /// A boolean scalar.
    Bool(bool),
    /// A string array (1-D).
    Strings(Vec<String>),
    /// A float array with its shape (row-major).
    F64Array {
        /// Shape (1-D or 2-D).
        shape: Vec<usize>,
        /// Values.
        data: Vec<f64>,
    },
    /// An integer array with its shape (row-major).
    I64Array {
        /// Shape (1-D or 2-D).
        shape: Vec<usize>,
        /// Values.
        data: Vec<i64>,
    },
    /// A nested mapping.
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// The nested mapping, if this is one.
    pub fn as_map(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::Map(m) => Some(m),
            _ => None,
        }
    }
}
