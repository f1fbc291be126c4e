//! Seeded, stratified subsampling: keep at most `max` rows with the label proportions of the whole.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::collections::BTreeMap;

/// Indices (ascending) of at most `max` rows (`max = 0` or `max >= n`: all rows). Each label gets
/// `floor(max * n_label / n)` rows, and the rows left over go to the labels with the largest
/// remainders (ties: smaller label first); the rows of a label are a seeded random choice.
pub fn stratified_subsample(labels: &[u32], max: usize, seed: u64) -> Vec<usize> {
    let n = labels.len();
    if max == 0 || max >= n {
        return (0..n).collect();
    }
    let mut by_label: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &l) in labels.iter().enumerate() {
        by_label.entry(l).or_default().push(i);
    }
    let mut quota: Vec<(u32, usize, usize)> = by_label
        .iter()
        .map(|(&l, rows)| {
            let exact = max as u128 * rows.len() as u128;
            (l, (exact / n as u128) as usize, (exact % n as u128) as usize)
        })
        .collect();
    let mut left = max - quota.iter().map(|q| q.1).sum::<usize>();
    let mut order: Vec<usize> = (0..quota.len()).collect();
    order.sort_by(|&a, &b| quota[b].2.cmp(&quota[a].2).then(quota[a].0.cmp(&quota[b].0)));
    for &i in &order {
        if left == 0 {
            break;
        }
        quota[i].1 += 1;
        left -= 1;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut keep = Vec::with_capacity(max);
    for (label, take, _) in quota {
        let mut rows = by_label[&label].clone();
        rows.shuffle(&mut rng);
        keep.extend_from_slice(&rows[..take]);
    }
    keep.sort_unstable();
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_proportions_and_exact_size() {
        // 60 / 30 / 10 rows of labels 0 / 1 / 2.
        let labels: Vec<u32> = (0..100).map(|i| if i < 60 { 0 } else if i < 90 { 1 } else { 2 }).collect();
        let keep = stratified_subsample(&labels, 20, 7);
        assert_eq!(keep.len(), 20);
        let count = |l| keep.iter().filter(|&&i| labels[i] == l).count();
        assert_eq!((count(0), count(1), count(2)), (12, 6, 2));
        assert!(keep.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(keep, stratified_subsample(&labels, 20, 7));
        assert_ne!(keep, stratified_subsample(&labels, 20, 8));
    }

    #[test]
    fn remainders_fill_the_budget() {
        let labels = [0, 0, 1, 1, 2, 2, 2];
        let keep = stratified_subsample(&labels, 4, 1);
        assert_eq!(keep.len(), 4);
        assert_eq!(stratified_subsample(&labels, 0, 1).len(), 7);
        assert_eq!(stratified_subsample(&labels, 99, 1).len(), 7);
    }
}
