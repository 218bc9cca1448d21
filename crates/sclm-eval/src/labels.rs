//! Label encoding shared by the metrics.

use std::collections::BTreeMap;

/// Encodes labels as codes `0..k` into the sorted distinct values (as scikit-learn's
/// `np.unique` does). Returns (codes, classes).
pub fn encode<T: Ord + Clone>(labels: &[T]) -> (Vec<usize>, Vec<T>) {
    let mut map: BTreeMap<&T, usize> = BTreeMap::new();
    for l in labels {
        map.insert(l, 0);
    }
    let classes: Vec<T> = map.keys().map(|&k| k.clone()).collect();
    for (i, v) in map.values_mut().enumerate() {
        *v = i;
    }
    let codes = labels.iter().map(|l| map[l]).collect();
    (codes, classes)
}

/// Encodes two label vectors into codes of their sorted union of classes.
pub fn encode_pair<T: Ord + Clone>(a: &[T], b: &[T]) -> (Vec<usize>, Vec<usize>, Vec<T>) {
    let joined: Vec<T> = a.iter().chain(b.iter()).cloned().collect();
    let (codes, classes) = encode(&joined);
    let (ca, cb) = codes.split_at(a.len());
    (ca.to_vec(), cb.to_vec(), classes)
}

/// Number of elements in each code `0..k`.
pub(crate) fn counts(codes: &[usize], k: usize) -> Vec<usize> {
    let mut c = vec![0usize; k];
    for &x in codes {
        c[x] += 1;
    }
    c
}
