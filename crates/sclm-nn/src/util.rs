//! Small tensor helpers shared by the modules.
use burn::tensor::{Device, Int, Tensor, TensorData};

/// Reads a float tensor back to the host as `f32`.
pub(crate) fn to_vec<const D: usize>(t: Tensor<D>) -> Vec<f32> {
    t.into_data().convert::<f32>().try_to_vec::<f32>().expect("float tensor data")
}

/// Reads a scalar-like tensor (one element) as f64.
pub(crate) fn scalar<const D: usize>(t: Tensor<D>) -> f64 {
    let v = to_vec(t);
    debug_assert_eq!(v.len(), 1);
    v[0] as f64
}

/// A float tensor from host data.
pub(crate) fn tensor_from<const D: usize>(data: Vec<f32>, shape: [usize; D], device: &Device) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

/// A 1-D int tensor from host indices.
pub(crate) fn int1(data: Vec<i64>, device: &Device) -> Tensor<1, Int> {
    let n = data.len();
    Tensor::from_data(TensorData::new(data, [n]), device)
}
