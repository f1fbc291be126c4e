//! Client partitioners (seeded, deterministic), following flwr-datasets where they overlap.
//!
//! One `ChaCha8Rng` seeded with `seed` drives each partitioner. Every train row goes to exactly one
//! client; the result lists each client's row indices.
//!
//! - **iid**: shuffle all rows, then cut contiguous shards; the first `n % clients` clients get one
//!   row more (`datasets.shard(contiguous=True)` after `FederatedDataset(shuffle=True)`).
//! - **dirichlet** (`DirichletPartitioner`, self_balancing off): for each label in sorted order draw
//!   `p ~ Dirichlet(alpha, …, alpha)` (normalised Gamma(alpha, 1) draws) and split that label's rows,
//!   in dataset order, at `floor(cumsum(p) * n_label)`. If a client ends up with fewer than
//!   `min_client_size` rows the whole draw is repeated with the advanced RNG, up to 10 re-draws
//!   (11 draws), then an error. Finally each client's rows are shuffled.
//! - **dirichlet-client** (client-wise label mixes, Hsu et al. 2019): every client holds an equal
//!   share of the rows (as iid), and its label mix is one draw `q ~ Dirichlet(alpha, …, alpha)` over
//!   the labels. Clients are filled one row at a time, round-robin, each row's label drawn from the
//!   client's `q` renormalised over the labels that still have rows (a label that runs out drops
//!   out of every mix), the row taken from that label's seeded shuffle. So every client has rows at
//!   any alpha, however small: at alpha = 0.01 a client holds about one label, where label-wise
//!   `dirichlet` with many clients leaves most clients empty (20 labels cannot cover 100 clients).
//! - **pathological** (in the spirit of `PathologicalPartitioner`, but not its assignment): the labels
//!   present are put in a seeded random order `L`; client `i` holds labels `L[(i*k + j) mod |L|]`,
//!   `j < k`, so every client holds exactly `k` distinct labels and every label is held when
//!   `clients * k >= |L|`. flwr-datasets' deterministic mode instead gives client `i` the labels
//!   `(i + j) mod |L|` in label order, so neighbouring clients share `k − 1` labels; here clients take
//!   consecutive blocks of `k` labels of a seeded permutation, which spreads the labels over clients
//!   more evenly. Kept as it is: changing it would change every pathological partition on record. Each label's rows are shuffled and split as evenly as possible among the
//!   clients holding it (`array_split`). Impossible settings are errors rather than dropped rows.
//! - **natural** ([`natural`], `NaturalIdPartitioner`): one client per distinct value of an id
//!   column (a writer, a user), clients in order of each id's first row. Real federated text
//!   comes per writer, so label skew and size skew are the data's own. With `max_clients` below the
//!   number of ids, the `max_clients` largest ids stay clients (ties: first seen first) and each
//!   smaller id, whole, joins one of them drawn uniformly by the seed: a merged client holds several
//!   writers, never a writer split in two.

use crate::DataError;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Gamma};

/// Re-draws allowed after the first Dirichlet draw.
pub const MAX_REDRAWS: usize = 10;

/// A partitioning scheme with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum Scheme {
    /// Shuffle and shard evenly.
    Iid,
    /// Per-label Dirichlet proportions.
    Dirichlet {
        /// Concentration (> 0); smaller = more skew.
        alpha: f64,
        /// Every client gets at least this many rows.
        min_client_size: usize,
    },
    /// Per-client Dirichlet label mixes, equal client sizes.
    DirichletClient {
        /// Concentration (> 0); smaller = more skew.
        alpha: f64,
    },
    /// Exactly `classes_per_client` labels per client.
    Pathological {
        /// Labels per client.
        classes_per_client: usize,
    },
}

/// Splits rows with `labels` (ids `< num_labels`) among `clients`.
pub fn partition(
    labels: &[u32],
    num_labels: usize,
    clients: usize,
    scheme: &Scheme,
    seed: u64,
) -> Result<Vec<Vec<usize>>, DataError> {
    if clients == 0 {
        return Err(DataError::Partition("partition.clients must be >= 1 (got 0)".into()));
    }
    if labels.len() < clients {
        return Err(DataError::Partition(format!(
            "partition.clients = {clients} exceeds the {} train rows",
            labels.len()
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    match *scheme {
        Scheme::Iid => Ok(iid(labels.len(), clients, &mut rng)),
        Scheme::Dirichlet { alpha, min_client_size } => {
            dirichlet(labels, num_labels, clients, alpha, min_client_size, &mut rng)
        }
        Scheme::DirichletClient { alpha } => dirichlet_client(labels, num_labels, clients, alpha, &mut rng),
        Scheme::Pathological { classes_per_client } => {
            pathological(labels, num_labels, clients, classes_per_client, &mut rng)
        }
    }
}

fn dirichlet_client(labels: &[u32], num_labels: usize, clients: usize, alpha: f64, rng: &mut ChaCha8Rng) -> Result<Vec<Vec<usize>>, DataError> {
    use rand::Rng;
    if !(alpha > 0.0 && alpha.is_finite()) {
        return Err(DataError::Partition(format!("partition.alpha must be > 0 (got {alpha})")));
    }
    let gamma = Gamma::new(alpha, 1.0).map_err(|e| DataError::Partition(format!("partition.alpha = {alpha}: {e}")))?;
    let mut pools = rows_by_label(labels, num_labels);
    for pool in &mut pools {
        pool.shuffle(rng);
    }
    let mixes: Vec<Vec<f64>> = (0..clients).map(|_| dirichlet_draw(&gamma, num_labels, rng)).collect();
    let n = labels.len();
    let (div, rem) = (n / clients, n % clients);
    let sizes: Vec<usize> = (0..clients).map(|i| div + usize::from(i < rem)).collect();
    let mut parts: Vec<Vec<usize>> = sizes.iter().map(|&s| Vec::with_capacity(s)).collect();
    for step in 0..sizes[0] {
        for (c, part) in parts.iter_mut().enumerate() {
            if step >= sizes[c] {
                continue;
            }
            let weights: Vec<f64> = mixes[c].iter().zip(&pools).map(|(q, pool)| if pool.is_empty() { 0.0 } else { *q }).collect();
            let total: f64 = weights.iter().sum();
            let label = if total > 0.0 {
                let mut u = rng.random::<f64>() * total;
                let mut pick = None;
                for (l, w) in weights.iter().enumerate() {
                    if *w > 0.0 {
                        pick = Some(l);
                        if u < *w {
                            break;
                        }
                        u -= w;
                    }
                }
                pick.expect("a label with rows")
            } else {
                // Every label this client's mix favours has run out (its weights underflowed to 0
                // elsewhere): take from the largest pool left.
                (0..num_labels).max_by_key(|&l| (pools[l].len(), std::cmp::Reverse(l))).expect("labels")
            };
            part.push(pools[label].pop().expect("rows remain while a client is short"));
        }
    }
    for part in &mut parts {
        part.shuffle(rng);
    }
    Ok(parts)
}

fn iid(n: usize, clients: usize, rng: &mut ChaCha8Rng) -> Vec<Vec<usize>> {
    let mut rows: Vec<usize> = (0..n).collect();
    rows.shuffle(rng);
    let (div, rem) = (n / clients, n % clients);
    (0..clients)
        .map(|i| {
            let start = div * i + i.min(rem);
            let len = div + usize::from(i < rem);
            rows[start..start + len].to_vec()
        })
        .collect()
}

fn rows_by_label(labels: &[u32], num_labels: usize) -> Vec<Vec<usize>> {
    let mut by = vec![Vec::new(); num_labels];
    for (i, &l) in labels.iter().enumerate() {
        by[l as usize].push(i);
    }
    by
}

/// One Dirichlet(alpha, …, alpha) draw of length `k` (re-drawn in the rare case every Gamma draw
/// underflows to 0). Not `rand_distr::Dirichlet`: in rand_distr 0.5 its dimension is a const generic
/// (`Dirichlet<F, N>`), and the client count is only known at run time; its gamma method is this
/// same normalised Gamma(alpha, 1) vector (for alpha < 0.1 it switches to a Beta stick-breaking
/// method, which would draw different partitions).
fn dirichlet_draw(gamma: &Gamma<f64>, k: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    loop {
        let g: Vec<f64> = (0..k).map(|_| gamma.sample(rng)).collect();
        let sum: f64 = g.iter().sum();
        if sum > 0.0 && sum.is_finite() {
            return g.into_iter().map(|x| x / sum).collect();
        }
    }
}

fn dirichlet(
    labels: &[u32],
    num_labels: usize,
    clients: usize,
    alpha: f64,
    min_client_size: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Vec<usize>>, DataError> {
    if !(alpha > 0.0 && alpha.is_finite()) {
        return Err(DataError::Partition(format!("partition.alpha must be > 0 (got {alpha})")));
    }
    let gamma = Gamma::new(alpha, 1.0).map_err(|e| DataError::Partition(format!("partition.alpha = {alpha}: {e}")))?;
    let by_label = rows_by_label(labels, num_labels);
    let mut smallest = 0;
    for draw in 0..=MAX_REDRAWS {
        let mut parts = vec![Vec::new(); clients];
        for rows in &by_label {
            let p = dirichlet_draw(&gamma, clients, rng);
            let n = rows.len();
            let mut cum = 0.0;
            let mut start = 0;
            for (c, part) in parts.iter_mut().enumerate() {
                cum += p[c];
                let end = if c + 1 == clients { n } else { ((cum * n as f64).floor() as usize).clamp(start, n) };
                part.extend_from_slice(&rows[start..end]);
                start = end;
            }
        }
        smallest = parts.iter().map(Vec::len).min().unwrap_or(0);
        if smallest >= min_client_size {
            for part in &mut parts {
                part.shuffle(rng);
            }
            return Ok(parts);
        }
        tracing::warn!(
            "dirichlet draw {} of {}: smallest client has {smallest} < partition.min_client_size = {min_client_size} rows; re-drawing",
            draw + 1,
            MAX_REDRAWS + 1
        );
    }
    Err(DataError::Partition(format!(
        "partition: dirichlet(alpha = {alpha}) left a client with {smallest} < partition.min_client_size = \
         {min_client_size} rows in {} draws; lower partition.min_client_size or partition.clients, or raise partition.alpha",
        MAX_REDRAWS + 1
    )))
}

fn pathological(
    labels: &[u32],
    num_labels: usize,
    clients: usize,
    k: usize,
    rng: &mut ChaCha8Rng,
) -> Result<Vec<Vec<usize>>, DataError> {
    let by_label = rows_by_label(labels, num_labels);
    let mut present: Vec<usize> = (0..num_labels).filter(|&l| !by_label[l].is_empty()).collect();
    let n_present = present.len();
    if k == 0 || k > n_present {
        return Err(DataError::Partition(format!(
            "partition.classes_per_client must be in 1 ..= {n_present} (the labels present) (got {k})"
        )));
    }
    if clients * k < n_present {
        return Err(DataError::Partition(format!(
            "partition: {clients} clients x {k} classes hold only {} of the {n_present} labels; raise \
             partition.clients or partition.classes_per_client so that clients x classes_per_client >= {n_present}",
            clients * k
        )));
    }
    present.shuffle(rng);
    let mut holders: Vec<Vec<usize>> = vec![Vec::new(); num_labels];
    for c in 0..clients {
        for j in 0..k {
            holders[present[(c * k + j) % n_present]].push(c);
        }
    }
    let mut parts = vec![Vec::new(); clients];
    for (label, rows) in by_label.iter().enumerate() {
        let h = &holders[label];
        if h.is_empty() {
            continue;
        }
        if rows.len() < h.len() {
            return Err(DataError::Partition(format!(
                "partition: label {label} has {} rows but {} clients hold it; lower partition.clients or \
                 partition.classes_per_client",
                rows.len(),
                h.len()
            )));
        }
        let mut rows = rows.clone();
        rows.shuffle(rng);
        let (div, rem) = (rows.len() / h.len(), rows.len() % h.len());
        let mut start = 0;
        for (i, &c) in h.iter().enumerate() {
            let len = div + usize::from(i < rem);
            parts[c].extend_from_slice(&rows[start..start + len]);
            start += len;
        }
    }
    for part in &mut parts {
        part.shuffle(rng);
    }
    Ok(parts)
}

/// What [`natural`] did: the ids behind each client, in client order.
#[derive(Debug, Clone, PartialEq)]
pub struct NaturalPartition {
    /// Row indices per client (shuffled, seeded).
    pub parts: Vec<Vec<usize>>,
    /// The ids each client holds; its first id is the one it was made for.
    pub ids: Vec<Vec<String>>,
    /// Distinct ids in the rows.
    pub distinct_ids: usize,
}

/// Natural-id partition of rows whose writer ids are `ids` (see the module docs); `max_clients = 0`
/// keeps every id as its own client.
pub fn natural(ids: &[String], max_clients: usize, seed: u64) -> Result<NaturalPartition, DataError> {
    if ids.is_empty() {
        return Err(DataError::Partition("partition: natural ids need at least one train row".into()));
    }
    // Group rows by id, in order of first appearance.
    let mut index: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
    for (row, id) in ids.iter().enumerate() {
        let g = *index.entry(id.as_str()).or_insert_with(|| {
            groups.push((id.clone(), Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(row);
    }
    let distinct_ids = groups.len();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let keep = if max_clients == 0 { distinct_ids } else { max_clients.min(distinct_ids) };
    // Largest ids first (stable: first seen first among equals); the first `keep` stay clients.
    let mut by_size: Vec<usize> = (0..distinct_ids).collect();
    by_size.sort_by_key(|&g| std::cmp::Reverse(groups[g].1.len()));
    let mut kept: Vec<usize> = by_size[..keep].to_vec();
    kept.sort_unstable(); // clients in order of first appearance
    let mut client_of = vec![usize::MAX; distinct_ids];
    for (client, &g) in kept.iter().enumerate() {
        client_of[g] = client;
    }
    let mut parts: Vec<Vec<usize>> = kept.iter().map(|&g| groups[g].1.clone()).collect();
    let mut held: Vec<Vec<String>> = kept.iter().map(|&g| vec![groups[g].0.clone()]).collect();
    for g in 0..distinct_ids {
        if client_of[g] == usize::MAX {
            let client = rand::Rng::random_range(&mut rng, 0..keep);
            parts[client].extend_from_slice(&groups[g].1);
            held[client].push(groups[g].0.clone());
        }
    }
    for part in &mut parts {
        part.shuffle(&mut rng);
    }
    Ok(NaturalPartition { parts, ids: held, distinct_ids })
}

/// `counts[client][label]`: rows of each label per client.
pub fn label_counts(labels: &[u32], parts: &[Vec<usize>], num_labels: usize) -> Vec<Vec<u64>> {
    parts
        .iter()
        .map(|rows| {
            let mut c = vec![0u64; num_labels];
            for &r in rows {
                c[labels[r] as usize] += 1;
            }
            c
        })
        .collect()
}

/// Shannon entropy, in bits, of a label histogram (0 for an empty one).
pub fn label_entropy_bits(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return 0.0;
    }
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / total as f64;
            -p * p.log2()
        })
        .sum()
}

/// Mean over clients of [`label_entropy_bits`].
pub fn mean_label_entropy_bits(counts: &[Vec<u64>]) -> f64 {
    if counts.is_empty() {
        return 0.0;
    }
    counts.iter().map(|c| label_entropy_bits(c)).sum::<f64>() / counts.len() as f64
}

#[cfg(test)]
mod tests;
