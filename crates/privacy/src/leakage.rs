//! How much an attack on the uploads recovered: a recovered set scored against the truth
//! ([`SetRecovery`]), and one method's scores over its recorded uploads ([`MethodLeakage`]), with
//! the per-upload values a study compares methods on.

use serde::{Deserialize, Serialize};

/// A recovered set against the truth.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRecovery {
    /// Members the attack recovered.
    pub recovered: usize,
    /// Members of the true set.
    pub truth: usize,
    /// Recovered members that are true.
    pub hits: usize,
}

impl SetRecovery {
    /// `recovered` against `truth`.
    pub fn of<T: Ord>(recovered: &std::collections::BTreeSet<T>, truth: &std::collections::BTreeSet<T>) -> Self {
        Self { recovered: recovered.len(), truth: truth.len(), hits: recovered.intersection(truth).count() }
    }

    /// hits / recovered (`None` when nothing was recovered).
    pub fn precision(&self) -> Option<f64> {
        (self.recovered > 0).then(|| self.hits as f64 / self.recovered as f64)
    }

    /// hits / truth (`None` for an empty truth).
    pub fn recall(&self) -> Option<f64> {
        (self.truth > 0).then(|| self.hits as f64 / self.truth as f64)
    }
}

/// One method's leakage over its recorded uploads (every seed pooled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodLeakage {
    /// Uploads attacked.
    pub uploads: usize,
    /// Mean token precision over the uploads whose attack recovered a token.
    pub token_precision: Option<f64>,
    /// Mean token recall (`None`: the method never sends the word embeddings).
    pub token_recall: Option<f64>,
    /// Mean label precision over the uploads whose attack recovered a label.
    pub label_precision: Option<f64>,
    /// Mean label recall (`None`: the method never sends the output bias).
    pub label_recall: Option<f64>,
    /// What a guess of as many labels at random scores: the mean of |true labels| / labels.
    pub label_precision_chance: Option<f64>,
    /// The shadow probe's share of right dominant-label guesses (`None`: not probed).
    pub probe_accuracy: Option<f64>,
    /// Guesses it made.
    pub probe_guesses: usize,
    /// 1 / labels.
    pub probe_chance: f64,
    /// Per upload, the token recall (0 where the upload carries no embeddings: nothing leaks).
    pub token_recall_per_upload: Vec<f64>,
    /// Per upload, label precision above chance (0 where no label is recovered or sent).
    pub label_excess_per_upload: Vec<f64>,
    /// Per probed upload, 1 for a right guess, else 0.
    pub probe_hits: Vec<f64>,
}

fn mean(values: impl Iterator<Item = f64>) -> Option<f64> {
    let v: Vec<f64> = values.collect();
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

impl MethodLeakage {
    /// The scores of `uploads` (token recovery, label recovery, and whether the probe guessed the
    /// dominant label right, each `None` where the attack had nothing to read) for a task of
    /// `num_labels` labels.
    pub fn of(num_labels: usize, uploads: impl Iterator<Item = (Option<SetRecovery>, Option<SetRecovery>, Option<bool>)>) -> Self {
        let rows: Vec<_> = uploads.collect();
        let labels = num_labels.max(1) as f64;
        let probe: Vec<f64> = rows.iter().filter_map(|r| r.2).map(|hit| f64::from(u8::from(hit))).collect();
        Self {
            uploads: rows.len(),
            token_precision: mean(rows.iter().filter_map(|r| r.0?.precision())),
            token_recall: mean(rows.iter().filter_map(|r| r.0?.recall())),
            label_precision: mean(rows.iter().filter_map(|r| r.1?.precision())),
            label_recall: mean(rows.iter().filter_map(|r| r.1?.recall())),
            label_precision_chance: mean(rows.iter().filter_map(|r| Some(r.1?.truth as f64 / labels))),
            probe_accuracy: mean(probe.iter().copied()),
            probe_guesses: probe.len(),
            probe_chance: 1.0 / labels,
            token_recall_per_upload: rows.iter().map(|r| r.0.and_then(|t| t.recall()).unwrap_or(0.0)).collect(),
            label_excess_per_upload: rows
                .iter()
                .map(|r| r.1.and_then(|l| Some(l.precision()? - l.truth as f64 / labels)).unwrap_or(0.0))
                .collect(),
            probe_hits: probe,
        }
    }

    /// Two methods' uploads pooled (SLoRA's two stages as one method).
    pub fn pooled(parts: &[&MethodLeakage]) -> Option<MethodLeakage> {
        let first = parts.first()?;
        let weighted = |f: &dyn Fn(&MethodLeakage) -> Option<f64>, w: &dyn Fn(&MethodLeakage) -> usize| {
            let (num, den) = parts.iter().filter_map(|p| Some((f(p)? * w(p) as f64, w(p)))).fold((0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            (den > 0).then(|| num / den as f64)
        };
        let cat = |f: &dyn Fn(&MethodLeakage) -> &Vec<f64>| parts.iter().flat_map(|p| f(p).iter().copied()).collect::<Vec<f64>>();
        Some(MethodLeakage {
            uploads: parts.iter().map(|p| p.uploads).sum(),
            token_precision: weighted(&|p| p.token_precision, &|p| p.uploads),
            token_recall: weighted(&|p| p.token_recall, &|p| p.uploads),
            label_precision: weighted(&|p| p.label_precision, &|p| p.uploads),
            label_recall: weighted(&|p| p.label_recall, &|p| p.uploads),
            label_precision_chance: weighted(&|p| p.label_precision_chance, &|p| p.uploads),
            probe_accuracy: weighted(&|p| p.probe_accuracy, &|p| p.probe_guesses),
            probe_guesses: parts.iter().map(|p| p.probe_guesses).sum(),
            probe_chance: first.probe_chance,
            token_recall_per_upload: cat(&|p| &p.token_recall_per_upload),
            label_excess_per_upload: cat(&|p| &p.label_excess_per_upload),
            probe_hits: cat(&|p| &p.probe_hits),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_and_pooling() {
        let set = |r, t, h| Some(SetRecovery { recovered: r, truth: t, hits: h });
        let a = MethodLeakage::of(4, [(set(10, 10, 10), set(2, 2, 2), Some(true)), (None, set(1, 3, 1), Some(false))].into_iter());
        assert_eq!(a.token_recall, Some(1.0));
        assert_eq!(a.token_recall_per_upload, vec![1.0, 0.0]);
        assert_eq!(a.label_precision_chance, Some((0.5 + 0.75) / 2.0));
        assert_eq!(a.label_excess_per_upload, vec![0.5, 0.25]);
        assert_eq!((a.probe_accuracy, a.probe_guesses), (Some(0.5), 2));
        let b = MethodLeakage::of(4, [(None, None, None)].into_iter());
        assert_eq!((b.token_recall, b.label_precision, b.probe_accuracy), (None, None, None));
        let both = MethodLeakage::pooled(&[&a, &b]).unwrap();
        assert_eq!((both.uploads, both.probe_guesses, both.token_recall_per_upload.len()), (3, 2, 3));
        assert_eq!(both.probe_accuracy, Some(0.5));
    }
}
