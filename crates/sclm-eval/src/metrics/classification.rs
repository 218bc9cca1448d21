//! Classification and retrieval metrics, following scikit-learn's definitions.
//!
//! Class sets are the sorted union of true and predicted labels (as `sklearn.metrics`
//! does); a ratio with a zero denominator counts as 0 (`zero_division=0`).

use serde::{Deserialize, Serialize};

use crate::error::{check_len, invalid, Result};
use crate::labels::encode_pair;

/// Fraction of positions where `y_pred` equals `y_true`.
pub fn accuracy<T: PartialEq>(y_true: &[T], y_pred: &[T]) -> Result<f64> {
    check_len("accuracy: y_pred vs y_true", y_true.len(), y_pred.len())?;
    if y_true.is_empty() {
        return invalid("accuracy: no samples");
    }
    let hits = y_true.iter().zip(y_pred).filter(|(a, b)| a == b).count();
    Ok(hits as f64 / y_true.len() as f64)
}

/// A confusion matrix: `counts[i][j]` = samples of true class `classes[i]` predicted as
/// `classes[j]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Confusion<T> {
    /// Sorted union of the true and predicted classes.
    pub classes: Vec<T>,
    /// Counts, rows = true class, columns = predicted class.
    pub counts: Vec<Vec<usize>>,
}

/// Confusion matrix over the sorted union of classes (`sklearn.metrics.confusion_matrix`).
pub fn confusion_matrix<T: Ord + Clone>(y_true: &[T], y_pred: &[T]) -> Result<Confusion<T>> {
    check_len("confusion matrix: y_pred vs y_true", y_true.len(), y_pred.len())?;
    let (t, p, classes) = encode_pair(y_true, y_pred);
    let k = classes.len();
    let mut counts = vec![vec![0usize; k]; k];
    for (&a, &b) in t.iter().zip(&p) {
        counts[a][b] += 1;
    }
    Ok(Confusion { classes, counts })
}

/// Per-class precision, recall, F1 and support, plus their averages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassReport<T> {
    /// Sorted union of the true and predicted classes.
    pub classes: Vec<T>,
    /// Precision of each class.
    pub precision: Vec<f64>,
    /// Recall of each class.
    pub recall: Vec<f64>,
    /// F1 of each class.
    pub f1: Vec<f64>,
    /// Number of true samples of each class.
    pub support: Vec<usize>,
    /// Unweighted mean of per-class precision.
    pub macro_precision: f64,
    /// Unweighted mean of per-class recall.
    pub macro_recall: f64,
    /// Unweighted mean of per-class F1 (`f1_score(average='macro')`).
    pub macro_f1: f64,
    /// Support-weighted mean of per-class F1 (`f1_score(average='weighted')`).
    pub weighted_f1: f64,
    /// Accuracy.
    pub accuracy: f64,
}

/// Precision, recall and F1 per class and averaged, as `precision_recall_fscore_support`.
pub fn class_report<T: Ord + Clone>(y_true: &[T], y_pred: &[T]) -> Result<ClassReport<T>> {
    let cm = confusion_matrix(y_true, y_pred)?;
    if y_true.is_empty() {
        return invalid("classification report: no samples");
    }
    let k = cm.classes.len();
    let div = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let mut precision = vec![0.0; k];
    let mut recall = vec![0.0; k];
    let mut f1 = vec![0.0; k];
    let mut support = vec![0usize; k];
    let mut hits = 0;
    for c in 0..k {
        let tp = cm.counts[c][c];
        hits += tp;
        let pred: usize = (0..k).map(|r| cm.counts[r][c]).sum();
        let tru: usize = cm.counts[c].iter().sum();
        support[c] = tru;
        precision[c] = div(tp, pred);
        recall[c] = div(tp, tru);
        // sklearn: F = 2 tp / (2 tp + fp + fn), 0 when the denominator is 0.
        f1[c] = div(2 * tp, pred + tru);
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let n: usize = support.iter().sum();
    let weighted_f1 = f1.iter().zip(&support).map(|(f, &s)| f * s as f64).sum::<f64>() / n as f64;
    Ok(ClassReport {
        macro_precision: mean(&precision),
        macro_recall: mean(&recall),
        macro_f1: mean(&f1),
        weighted_f1,
        accuracy: hits as f64 / n as f64,
        classes: cm.classes,
        precision,
        recall,
        f1,
        support,
    })
}

/// Macro-averaged F1 (`f1_score(average='macro')`).
pub fn f1_macro<T: Ord + Clone>(y_true: &[T], y_pred: &[T]) -> Result<f64> {
    Ok(class_report(y_true, y_pred)?.macro_f1)
}

/// Support-weighted F1 (`f1_score(average='weighted')`).
pub fn f1_weighted<T: Ord + Clone>(y_true: &[T], y_pred: &[T]) -> Result<f64> {
    Ok(class_report(y_true, y_pred)?.weighted_f1)
}

/// Average ranks (1-based) of `x`, ties sharing their mean rank (`scipy.stats.rankdata`).
pub fn average_ranks(x: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..x.len()).collect();
    order.sort_by(|&a, &b| x[a].total_cmp(&x[b]));
    let mut ranks = vec![0.0; x.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && x[order[j + 1]] == x[order[i]] {
            j += 1;
        }
        let r = (i + j) as f64 / 2.0 + 1.0;
        for &o in &order[i..=j] {
            ranks[o] = r;
        }
        i = j + 1;
    }
    ranks
}

fn binary_counts(y: &[bool]) -> (usize, usize) {
    let p = y.iter().filter(|&&b| b).count();
    (p, y.len() - p)
}

/// Area under the ROC curve of a binary problem (`roc_auc_score`), ties handled as the
/// trapezoidal rule does (equivalently the Mann–Whitney U statistic with average ranks).
pub fn roc_auc(y_true: &[bool], scores: &[f64]) -> Result<f64> {
    check_len("AUROC: scores vs labels", y_true.len(), scores.len())?;
    let (p, n) = binary_counts(y_true);
    if p == 0 || n == 0 {
        return invalid("AUROC is undefined when only one class is present");
    }
    if scores.iter().any(|s| s.is_nan()) {
        return invalid("AUROC: scores contain NaN");
    }
    let ranks = average_ranks(scores);
    let sum_pos: f64 = ranks.iter().zip(y_true).filter(|(_, &t)| t).map(|(r, _)| r).sum();
    Ok((sum_pos - (p * (p + 1)) as f64 / 2.0) / (p as f64 * n as f64))
}

/// Average precision of a binary problem (`average_precision_score`):
/// Σₙ (Rₙ − Rₙ₋₁) Pₙ over decreasing score thresholds.
pub fn average_precision(y_true: &[bool], scores: &[f64]) -> Result<f64> {
    check_len("average precision: scores vs labels", y_true.len(), scores.len())?;
    let (p, _) = binary_counts(y_true);
    if p == 0 {
        return invalid("average precision is undefined without positive samples");
    }
    if scores.iter().any(|s| s.is_nan()) {
        return invalid("average precision: scores contain NaN");
    }
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    let (mut tp, mut fp) = (0usize, 0usize);
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    let mut i = 0;
    while i < order.len() {
        let s = scores[order[i]];
        while i < order.len() && scores[order[i]] == s {
            if y_true[order[i]] {
                tp += 1
            } else {
                fp += 1
            }
            i += 1;
        }
        let recall = tp as f64 / p as f64;
        let precision = tp as f64 / (tp + fp) as f64;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
    }
    Ok(ap)
}

/// Multi-label (or one-vs-rest multi-class) AUROC / AUPRC summary.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiLabelScores {
    /// AUROC of each label (NaN where a label has a single class in `y_true`).
    pub auroc: Vec<f64>,
    /// Average precision of each label (NaN where a label has no positive).
    pub auprc: Vec<f64>,
    /// Mean AUROC over labels where it is defined (`average='macro'`).
    pub auroc_macro: f64,
    /// Mean AUPRC over labels where it is defined.
    pub auprc_macro: f64,
    /// AUROC of all (sample, label) pairs flattened (`average='micro'`).
    pub auroc_micro: f64,
    /// AUPRC of all (sample, label) pairs flattened.
    pub auprc_micro: f64,
}

/// AUROC and AUPRC per label, macro- and micro-averaged. `y_true` and `scores` are
/// `n_samples × n_labels`, row-major. scikit-learn raises on a label with one class; here
/// such labels are NaN and left out of the macro mean (an error if none is usable).
pub fn multilabel_scores(y_true: &[bool], scores: &[f64], n_labels: usize) -> Result<MultiLabelScores> {
    check_len("multi-label scores vs labels", y_true.len(), scores.len())?;
    if n_labels == 0 || !y_true.len().is_multiple_of(n_labels) {
        return invalid(format!("multi-label: {} values do not split into {n_labels} labels", y_true.len()));
    }
    let n = y_true.len() / n_labels;
    let mut auroc = vec![f64::NAN; n_labels];
    let mut auprc = vec![f64::NAN; n_labels];
    for l in 0..n_labels {
        let t: Vec<bool> = (0..n).map(|i| y_true[i * n_labels + l]).collect();
        let s: Vec<f64> = (0..n).map(|i| scores[i * n_labels + l]).collect();
        if let Ok(v) = roc_auc(&t, &s) {
            auroc[l] = v;
        }
        if let Ok(v) = average_precision(&t, &s) {
            auprc[l] = v;
        }
    }
    let nanmean = |v: &[f64]| -> Result<f64> {
        let ok: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
        if ok.is_empty() {
            return invalid("multi-label: no label has both classes present");
        }
        Ok(ok.iter().sum::<f64>() / ok.len() as f64)
    };
    Ok(MultiLabelScores {
        auroc_macro: nanmean(&auroc)?,
        auprc_macro: nanmean(&auprc)?,
        auroc_micro: roc_auc(y_true, scores)?,
        auprc_micro: average_precision(y_true, scores)?,
        auroc,
        auprc,
    })
}

/// Recall@k for retrieval: row `i` of the `n_queries × n_items` similarity matrix (row-major)
/// scores every item against query `i`; `truth[i]` is the index of its true match. A query
/// is a hit when fewer than `k` items score strictly higher than its true match (ties are
/// resolved in the query's favour). Returns the fraction of hits.
pub fn recall_at_k(similarity: &[f64], n_items: usize, truth: &[usize], k: usize) -> Result<f64> {
    if n_items == 0 || similarity.len() != truth.len() * n_items {
        return invalid(format!(
            "recall@k: similarity has {} values, expected {} queries x {n_items} items",
            similarity.len(),
            truth.len()
        ));
    }
    if truth.is_empty() {
        return invalid("recall@k: no queries");
    }
    let mut hits = 0;
    for (i, &t) in truth.iter().enumerate() {
        if t >= n_items {
            return invalid(format!("recall@k: true match {t} of query {i} is out of range ({n_items} items)"));
        }
        let row = &similarity[i * n_items..(i + 1) * n_items];
        let better = row.iter().filter(|&&s| s > row[t]).count();
        if better < k {
            hits += 1;
        }
    }
    Ok(hits as f64 / truth.len() as f64)
}
