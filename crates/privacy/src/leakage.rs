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

/// What the attacks recovered from one upload (`None`: the upload does not carry what the attack
/// reads).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct UploadScores {
    /// Token recovery.
    pub tokens: Option<SetRecovery>,
    /// Rows of the word-embedding matrix (the vocabulary a token guess is drawn from).
    pub vocabulary: Option<usize>,
    /// Label recovery.
    pub labels: Option<SetRecovery>,
    /// Whether the probe guessed the dominant label right.
    pub probe_hit: Option<bool>,
}

/// One method's leakage over its recorded uploads (every seed pooled).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MethodLeakage {
    /// Uploads attacked.
    pub uploads: usize,
    /// Mean token precision over the uploads whose attack recovered a token.
    pub token_precision: Option<f64>,
    /// Mean token recall (`None`: the method never sends the word embeddings). Noise that moves
    /// every row makes it 1: read it with the precision.
    pub token_recall: Option<f64>,
    /// What naming every row scores: the mean of |true tokens| / vocabulary.
    #[serde(default)]
    pub token_precision_chance: Option<f64>,
    /// Uploads whose token attack recovered something (the precision's count).
    #[serde(default)]
    pub token_measured: usize,
    /// Uploads whose label attack recovered something (the precision's count).
    #[serde(default)]
    pub label_measured: usize,
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
    /// Per upload, the token recall (0 where the upload carries no embeddings: this attack reads
    /// nothing).
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
    /// The scores of `uploads` for a task of `num_labels` labels.
    pub fn of(num_labels: usize, uploads: impl Iterator<Item = UploadScores>) -> Self {
        let rows: Vec<UploadScores> = uploads.collect();
        let labels = num_labels.max(1) as f64;
        let probe: Vec<f64> = rows.iter().filter_map(|r| r.probe_hit).map(|hit| f64::from(u8::from(hit))).collect();
        Self {
            uploads: rows.len(),
            token_precision: mean(rows.iter().filter_map(|r| r.tokens?.precision())),
            token_recall: mean(rows.iter().filter_map(|r| r.tokens?.recall())),
            token_precision_chance: mean(rows.iter().filter_map(|r| Some(r.tokens?.truth as f64 / r.vocabulary? as f64))),
            token_measured: rows.iter().filter(|r| r.tokens.is_some_and(|t| t.recovered > 0)).count(),
            label_measured: rows.iter().filter(|r| r.labels.is_some_and(|l| l.recovered > 0)).count(),
            label_precision: mean(rows.iter().filter_map(|r| r.labels?.precision())),
            label_recall: mean(rows.iter().filter_map(|r| r.labels?.recall())),
            label_precision_chance: mean(rows.iter().filter_map(|r| Some(r.labels?.truth as f64 / labels))),
            probe_accuracy: mean(probe.iter().copied()),
            probe_guesses: probe.len(),
            probe_chance: 1.0 / labels,
            token_recall_per_upload: rows.iter().map(|r| r.tokens.and_then(|t| t.recall()).unwrap_or(0.0)).collect(),
            label_excess_per_upload: rows
                .iter()
                .map(|r| r.labels.and_then(|l| Some(l.precision()? - l.truth as f64 / labels)).unwrap_or(0.0))
                .collect(),
            probe_hits: probe,
        }
    }

    /// Two methods' uploads pooled (SLoRA's two stages as one method): each mean weighted by the
    /// uploads it is over.
    pub fn pooled(parts: &[&MethodLeakage]) -> Option<MethodLeakage> {
        let first = parts.first()?;
        let weighted = |f: &dyn Fn(&MethodLeakage) -> Option<f64>, w: &dyn Fn(&MethodLeakage) -> usize| {
            let (num, den) = parts.iter().filter_map(|p| Some((f(p)? * w(p) as f64, w(p)))).fold((0.0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
            (den > 0).then(|| num / den as f64)
        };
        let cat = |f: &dyn Fn(&MethodLeakage) -> &Vec<f64>| parts.iter().flat_map(|p| f(p).iter().copied()).collect::<Vec<f64>>();
        Some(MethodLeakage {
            uploads: parts.iter().map(|p| p.uploads).sum(),
            token_precision: weighted(&|p| p.token_precision, &|p| p.token_measured),
            token_recall: weighted(&|p| p.token_recall, &|p| p.uploads),
            token_precision_chance: weighted(&|p| p.token_precision_chance, &|p| p.uploads),
            token_measured: parts.iter().map(|p| p.token_measured).sum(),
            label_measured: parts.iter().map(|p| p.label_measured).sum(),
            label_precision: weighted(&|p| p.label_precision, &|p| p.label_measured),
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
        let up = |tokens, labels, probe_hit| UploadScores { tokens, vocabulary: Some(100), labels, probe_hit };
        let a = MethodLeakage::of(4, [up(set(10, 10, 10), set(2, 2, 2), Some(true)), up(None, set(1, 3, 1), Some(false))].into_iter());
        assert_eq!(a.token_recall, Some(1.0));
        assert_eq!(a.token_precision_chance, Some(0.1));
        assert_eq!((a.token_measured, a.label_measured), (1, 2));
        assert_eq!(a.token_recall_per_upload, vec![1.0, 0.0]);
        assert_eq!(a.label_precision_chance, Some((0.5 + 0.75) / 2.0));
        assert_eq!(a.label_excess_per_upload, vec![0.5, 0.25]);
        assert_eq!((a.probe_accuracy, a.probe_guesses), (Some(0.5), 2));
        let b = MethodLeakage::of(4, [UploadScores::default()].into_iter());
        assert_eq!((b.token_recall, b.label_precision, b.probe_accuracy), (None, None, None));
        let both = MethodLeakage::pooled(&[&a, &b]).unwrap();
        assert_eq!((both.uploads, both.probe_guesses, both.token_recall_per_upload.len()), (3, 2, 3));
        assert_eq!(both.probe_accuracy, Some(0.5));
    }
}
