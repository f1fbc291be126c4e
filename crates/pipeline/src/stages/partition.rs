//! Stage `partition`: load the data, subsample, tokenize, split the train rows among clients, and
//! write `client-NNNNN.parquet`, `test.parquet`, `stats.parquet` and `labels.json`. With
//! `partition.validation_fraction > 0`, each client's shard gives that fraction of its rows
//! (stratified by label within the client, seeded) to `validation.parquet`; they never train, and
//! `pipeline tune` selects on them, never on the test rows.
//!
//! Shard columns: `input_ids` List<UInt32>, `label` UInt32, `row_id` UInt64 (see
//! `slora_data::shard`). `labels.json` holds `num_labels` and the label names; the manifest summary
//! repeats them with the row counts. Subsampling (`data.max_train` / `data.max_test`) and
//! partitioning are seeded with `partition.seed`.

use super::summaries::{NaturalSummary, PartitionSummary, SplitCounts, StageSummary};
use crate::config::{Config, PartitionScheme};
use crate::error::PipelineError;
use crate::hashing::input_hash;
use crate::stage::{Stage, StageCtx};
use crate::store::Artifact;
use rayon::prelude::*;
use serde_json::{json, Value};
use slora_data::partition::{label_counts, label_entropy_bits, mean_label_entropy_bits};
use slora_data::shard::{client_file_name, read_stats, write_rows, write_stats};
use slora_data::{DatasetSpec, LabelSet, Scheme};
use std::path::{Path, PathBuf};

/// The file holding the test rows.
pub const TEST_FILE: &str = "test.parquet";
/// The validation rows carved from the clients' shards (only with `partition.validation_fraction > 0`).
pub const VALIDATION_FILE: &str = "validation.parquet";
/// The client x label counts.
pub const STATS_FILE: &str = "stats.parquet";
/// `num_labels` and the label names.
pub const LABELS_FILE: &str = "labels.json";

/// The partition stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct Partition;

/// The data files the config names, resolved to local paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataFiles {
    /// The train rows' file (or the file with a split column), then its further shards.
    pub train: Vec<PathBuf>,
    /// The test rows' file and its further shards; empty to use the split column or
    /// `data.test_fraction`.
    pub test: Vec<PathBuf>,
}

impl DataFiles {
    fn first(files: &[PathBuf]) -> Option<(PathBuf, Vec<PathBuf>)> {
        files.split_first().map(|(a, rest)| (a.clone(), rest.to_vec()))
    }
}

/// One hash for a list of files: the file's own for one, else a hash of theirs in order.
fn files_hash(files: &[PathBuf]) -> String {
    match files {
        [one] => input_hash(one),
        many => {
            let joined: String = many.iter().map(|f| input_hash(f) + "\n").collect();
            crate::hashing::sha256_hex(joined.as_bytes())
        }
    }
}

/// The data files the config names: local paths as they are, `data.hub_file` inside a hub dataset,
/// or, when a hub dataset names no file, its Parquet files for `data.train_split` and
/// `data.test_split` (found at `data.revision`, else on the Hub's `refs/convert/parquet` branch).
pub fn resolve_data_files(cfg: &Config) -> Result<DataFiles, PipelineError> {
    let d = &cfg.data;
    let named = |key: &str, e: slora_hub::HubError| PipelineError::config(format!("{key}: {e}"));
    let test_source = |fallback_file: &str| -> Result<Vec<PathBuf>, PipelineError> {
        let file = if d.test_hub_file.is_empty() { fallback_file } else { &d.test_hub_file };
        Ok(vec![slora_hub::resolve_dataset_file(&d.test_source, &d.revision, file).map_err(|e| named("data.test_source", e))?])
    };
    let repo_id = match slora_hub::Source::parse(&d.source) {
        slora_hub::Source::Hub(repo_id) if d.hub_file.is_empty() => repo_id,
        _ => {
            let source = slora_hub::resolve_dataset_file(&d.source, &d.revision, &d.hub_file).map_err(|e| named("data.source", e))?;
            let test = if d.test_source.is_empty() { Vec::new() } else { test_source(&d.hub_file)? };
            return Ok(DataFiles { train: vec![source], test });
        }
    };
    let cache = slora_hub::HubCache::from_env();
    let found = cache.find_parquet(&repo_id, &d.revision, &[&d.train_split, &d.test_split]).map_err(|e| named("data.source", e))?;
    let fetch = |files: &[String]| -> Result<Vec<PathBuf>, PipelineError> {
        files
            .iter()
            .map(|f| cache.resolve_file(&repo_id, slora_hub::RepoKind::Dataset, &found.revision, f).map_err(|e| named("data.source", e)))
            .collect()
    };
    let train = fetch(&found.files[&d.train_split])?;
    let test = if !d.test_source.is_empty() {
        test_source("")?
    } else if d.test_fraction > 0.0 {
        Vec::new()
    } else {
        match found.files.get(&d.test_split) {
            Some(files) => fetch(files)?,
            None => {
                return Err(PipelineError::config(format!(
                    "data.test_split: dataset `{repo_id}` (revision `{}`) has no Parquet file for split `{}` (splits found: {}); name another split, or set data.test_fraction to hold out train rows",
                    found.revision,
                    d.test_split,
                    found.files.keys().cloned().collect::<Vec<_>>().join(", ")
                )))
            }
        }
    };
    Ok(DataFiles { train, test })
}

/// The model's `tokenizer.json`, resolved.
pub fn resolve_tokenizer(cfg: &Config) -> Result<PathBuf, PipelineError> {
    let dir = slora_hub::resolve_model_dir(&cfg.model.source, &cfg.model.revision, &["tokenizer.json"])?;
    Ok(dir.join("tokenizer.json"))
}

fn hash_or_error<T>(r: Result<T, PipelineError>, path: impl Fn(&T) -> &Path) -> String {
    match r {
        Ok(v) => input_hash(path(&v)),
        Err(e) => format!("unresolved: {e}"),
    }
}

impl Partition {
    /// The label-based scheme (`None` for natural ids, which split by writer instead).
    fn scheme(cfg: &Config) -> Option<Scheme> {
        let p = &cfg.partition;
        match p.scheme {
            PartitionScheme::Iid => Some(Scheme::Iid),
            PartitionScheme::Dirichlet => Some(Scheme::Dirichlet { alpha: p.alpha, min_client_size: p.min_client_size }),
            PartitionScheme::DirichletClient => Some(Scheme::DirichletClient { alpha: p.alpha }),
            PartitionScheme::Pathological => Some(Scheme::Pathological { classes_per_client: p.classes_per_client }),
            PartitionScheme::Natural => None,
        }
    }

    /// Splits the train rows among clients; for natural ids also what the ids became.
    fn split(
        cfg: &Config,
        train: &slora_data::Split,
        num_labels: usize,
        seed: u64,
    ) -> Result<(Vec<Vec<usize>>, Option<NaturalSummary>), PipelineError> {
        let p = &cfg.partition;
        let Some(scheme) = Self::scheme(cfg) else {
            let natural = slora_data::natural(&train.ids, p.max_clients, seed)?;
            let per_round = cfg.federation.clients_per_round;
            if natural.parts.len() < per_round {
                return Err(PipelineError::stage(
                    "partition",
                    format!(
                        "federation.clients_per_round = {per_round} exceeds the {} clients of the natural partition \
                         ({} distinct `{}` values in the train rows, partition.max_clients = {})",
                        natural.parts.len(),
                        natural.distinct_ids,
                        p.id_column,
                        p.max_clients
                    ),
                ));
            }
            let info = NaturalSummary {
                id_column: p.id_column.clone(),
                distinct_ids: natural.distinct_ids,
                max_clients: p.max_clients,
                ids_per_client: natural.ids.iter().map(Vec::len).collect(),
                first_id_per_client: natural.ids.iter().map(|h| h[0].clone()).collect(),
            };
            tracing::info!(
                "partition: {} distinct `{}` values -> {} clients",
                natural.distinct_ids,
                p.id_column,
                natural.parts.len()
            );
            return Ok((natural.parts, Some(info)));
        };
        Ok((slora_data::partition(&train.labels, num_labels, p.clients, &scheme, seed)?, None))
    }
}

impl Stage for Partition {
    fn keyed_by_rates(&self) -> bool {
        false
    }

    fn inspect(&self, artifact: &crate::store::Artifact) -> Result<(Value, String), PipelineError> {
        inspect(artifact)
    }

    fn name(&self) -> &'static str {
        "partition"
    }

    fn code_version(&self) -> u32 {
        1
    }

    fn deps(&self) -> &'static [&'static str] {
        &[]
    }

    fn params(&self, cfg: &Config) -> Value {
        let d = &cfg.data;
        let files = resolve_data_files(cfg);
        let mut data = json!({
            "source_sha256": match &files {
                Ok(f) => files_hash(&f.train),
                Err(e) => format!("unresolved: {e}"),
            },
            "text_column": d.text_column,
            "label_column": d.label_column,
            "max_len": d.max_len,
            "max_train": d.max_train,
            "max_test": d.max_test,
        });
        let test_files = files.as_ref().map(|f| f.test.as_slice()).unwrap_or_default();
        if !test_files.is_empty() {
            data["test_source_sha256"] = json!(files_hash(test_files));
        } else if !d.test_source.is_empty() {
            data["test_source_sha256"] = json!("unresolved");
        } else if d.test_fraction > 0.0 {
            data["test_fraction"] = json!(d.test_fraction);
        } else {
            data["split_column"] = json!(d.split_column);
            data["train_split"] = json!(d.train_split);
            data["test_split"] = json!(d.test_split);
        }
        let p = &cfg.partition;
        let mut part = json!({ "clients": p.clients, "scheme": p.scheme.to_string(), "seed": p.seed });
        match p.scheme {
            PartitionScheme::Natural => {
                // The data decide the client count; `clients_per_round` is checked against it.
                part.as_object_mut().expect("an object").remove("clients");
                part["id_column"] = json!(p.id_column);
                part["max_clients"] = json!(p.max_clients);
                part["clients_per_round"] = json!(cfg.federation.clients_per_round);
            }
            PartitionScheme::Iid => {}
            PartitionScheme::Dirichlet => {
                part["alpha"] = json!(p.alpha);
                part["min_client_size"] = json!(p.min_client_size);
            }
            PartitionScheme::DirichletClient => part["alpha"] = json!(p.alpha),
            PartitionScheme::Pathological => part["classes_per_client"] = json!(p.classes_per_client),
        }
        if p.validation_fraction > 0.0 {
            part["validation_fraction"] = json!(p.validation_fraction);
        }
        json!({
            "data": data,
            "tokenizer_sha256": hash_or_error(resolve_tokenizer(cfg), |p| p.as_path()),
            "partition": part,
        })
    }

    fn run(&self, ctx: &StageCtx, out: &Path) -> Result<Value, PipelineError> {
        let cfg = ctx.config;
        let clock = std::time::Instant::now();
        let lap = |what: &str| tracing::debug!("partition: {what} done at {:.3} s", clock.elapsed().as_secs_f64());
        let (ds, train, test, source) = load_rows(cfg)?;
        let d = &cfg.data;
        let seed = cfg.partition.seed;
        tracing::info!(
            "partition: {} train / {} test rows, {} labels from {}",
            train.len(),
            test.len(),
            ds.labels.num_labels,
            source.display()
        );

        lap("load");
        let tokenizer = slora_data::load_tokenizer(&resolve_tokenizer(cfg)?, d.max_len)?;
        let train_tok = slora_data::tokenize(&tokenizer, &train.texts, &ctx.progress(train.len() as u64, "tokenize train"))?;
        let test_tok = slora_data::tokenize(&tokenizer, &test.texts, &ctx.progress(test.len() as u64, "tokenize test"))?;

        lap("tokenize");
        let num_labels = ds.labels.num_labels;
        let (parts, natural) = Self::split(cfg, &train, num_labels, seed)?;
        let before: Vec<usize> = parts.iter().map(Vec::len).collect();
        let (parts, validation) = carve_validation(parts, &train.labels, cfg.partition.validation_fraction, seed);
        let validation_rows_per_client: Vec<usize> = match validation.is_empty() {
            true => Vec::new(),
            false => before.iter().zip(&parts).map(|(b, p)| b - p.len()).collect(),
        };

        lap("partition");
        // Shards: every client, then the test set; written in parallel.
        let bar = ctx.progress(parts.len() as u64 + 1, "write shards");
        let jobs: Vec<(String, Vec<usize>, bool)> = parts
            .iter()
            .enumerate()
            .map(|(i, rows)| (client_file_name(i), rows.clone(), false))
            .chain(std::iter::once((TEST_FILE.to_string(), (0..test.len()).collect(), true)))
            .chain((!validation.is_empty()).then(|| (VALIDATION_FILE.to_string(), validation.clone(), false)))
            .collect();
        jobs.par_iter().try_for_each(|(name, rows, is_test)| {
            let (split, tok) = if *is_test { (&test, &test_tok) } else { (&train, &train_tok) };
            let ids: Vec<&[u32]> = rows.iter().map(|&r| tok.ids[r].as_slice()).collect();
            let labels: Vec<u32> = rows.iter().map(|&r| split.labels[r]).collect();
            let row_ids: Vec<u64> = rows.iter().map(|&r| split.row_ids[r]).collect();
            write_rows(&out.join(name), &ids, &labels, &row_ids)?;
            bar.inc(1);
            Ok::<(), PipelineError>(())
        })?;
        bar.finish_and_clear();
        lap("write shards");

        let counts = label_counts(&train.labels, &parts, num_labels);
        write_stats(&out.join(STATS_FILE), &counts, &ds.labels.names)?;
        LabelSet::new(ds.labels.names.clone()).write(&out.join(LABELS_FILE))?;

        let token_rows = |t: &slora_data::Tokenized| t.ids.iter().map(Vec::len).sum::<usize>();
        let summary = PartitionSummary {
            clients: parts.len(),
            train_rows: train.len(),
            test_rows: test.len(),
            num_labels,
            label_names: ds.labels.names.clone(),
            rows_per_client: parts.iter().map(Vec::len).collect(),
            validation_rows: validation.len(),
            validation_rows_per_client,
            validation_fraction: cfg.partition.validation_fraction,
            mean_label_entropy_bits: mean_label_entropy_bits(&counts),
            empty_texts: SplitCounts { train: train_tok.empty_texts, test: test_tok.empty_texts },
            truncated: SplitCounts { train: train_tok.truncated, test: test_tok.truncated },
            tokens: SplitCounts { train: token_rows(&train_tok), test: token_rows(&test_tok) },
            scheme: cfg.partition.scheme.to_string(),
            natural,
        };
        Ok(summary.to_value())
    }
}

/// The rows the partition splits: the dataset, its train and test rows after the seeded
/// subsampling, and the train file.
fn load_rows(cfg: &Config) -> Result<(slora_data::Dataset, slora_data::Split, slora_data::Split, PathBuf), PipelineError> {
    let files = resolve_data_files(cfg)?;
    let (source, source_shards) = DataFiles::first(&files.train).expect("one train file at least");
    let (test_source, test_source_shards) = DataFiles::first(&files.test).unzip();
    let d = &cfg.data;
    let spec = DatasetSpec {
        source: source.clone(),
        source_shards,
        test_source,
        test_source_shards: test_source_shards.unwrap_or_default(),
        text_column: d.text_column.clone(),
        label_column: d.label_column.clone(),
        split_column: d.split_column.clone(),
        train_split: d.train_split.clone(),
        test_split: d.test_split.clone(),
        test_fraction: d.test_fraction,
        split_seed: cfg.partition.seed,
        id_column: (cfg.partition.scheme == PartitionScheme::Natural).then(|| cfg.partition.id_column.clone()),
    };
    let ds = slora_data::load_dataset(&spec)?;
    check_train_labels(&ds, &source, &d.label_column)?;
    let seed = cfg.partition.seed;
    let train = ds.train.select(&slora_data::stratified_subsample(&ds.train.labels, d.max_train, seed));
    let test = ds.test.select(&slora_data::stratified_subsample(&ds.test.labels, d.max_test, seed));
    Ok((ds, train, test, source))
}

/// Each client's validation rows and train rows as the partition of `cfg` carves them,
/// recomputed from the data without tokenizing (the split and the carve are seeded and read only
/// labels): for a partition written before its summary recorded the per-client counts.
pub fn recompute_validation_rows_per_client(cfg: &Config) -> Result<(Vec<usize>, Vec<usize>), PipelineError> {
    let (ds, train, _, _) = load_rows(cfg)?;
    let seed = cfg.partition.seed;
    let (parts, _) = Partition::split(cfg, &train, ds.labels.num_labels, seed)?;
    let before: Vec<usize> = parts.iter().map(Vec::len).collect();
    let (after, _) = carve_validation(parts, &train.labels, cfg.partition.validation_fraction, seed);
    Ok((before.iter().zip(&after).map(|(b, a)| b - a.len()).collect(), after.iter().map(Vec::len).collect()))
}

/// Moves `fraction` of each client's rows (rounded, at most all but one) into a validation set,
/// stratified by label within the client and seeded per client. Returns the remaining client
/// shards and the validation rows (client by client).
pub fn carve_validation(parts: Vec<Vec<usize>>, labels: &[u32], fraction: f64, seed: u64) -> (Vec<Vec<usize>>, Vec<usize>) {
    if fraction <= 0.0 {
        return (parts, Vec::new());
    }
    let mut validation = Vec::new();
    let parts = parts
        .into_iter()
        .enumerate()
        .map(|(client, rows)| {
            let take = ((rows.len() as f64 * fraction).round() as usize).min(rows.len().saturating_sub(1));
            if take == 0 {
                return rows;
            }
            let client_labels: Vec<u32> = rows.iter().map(|&r| labels[r]).collect();
            let client_seed = seed ^ (client as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
            let picked = slora_data::stratified_subsample(&client_labels, take, client_seed);
            let mut is_val = vec![false; rows.len()];
            for &i in &picked {
                is_val[i] = true;
            }
            validation.extend(picked.iter().map(|&i| rows[i]));
            rows.into_iter().zip(is_val).filter(|(_, v)| !v).map(|(r, _)| r).collect()
        })
        .collect();
    (parts, validation)
}

/// A classifier needs at least two labels among the train rows.
fn check_train_labels(ds: &slora_data::Dataset, source: &Path, label_column: &str) -> Result<(), PipelineError> {
    let mut present: Vec<u32> = ds.train.labels.clone();
    present.sort_unstable();
    present.dedup();
    if let [only] = present.as_slice() {
        let name = ds.labels.names.get(*only as usize).cloned().unwrap_or_else(|| only.to_string());
        return Err(PipelineError::stage(
            "partition",
            format!(
                "{}: data.label_column `{label_column}` holds a single label (`{name}`) in the train rows; classification needs at least 2",
                source.display()
            ),
        ));
    }
    Ok(())
}

/// `pipeline inspect partition`: clients, rows per client, label histograms, entropy, test rows.
pub fn inspect(a: &Artifact) -> Result<(Value, String), PipelineError> {
    let (counts, names) = read_stats(&a.file(STATS_FILE))?;
    let summary = PartitionSummary::of(a)?;
    let test_rows = summary.test_rows;
    let rows: Vec<u64> = counts.iter().map(|c| c.iter().sum()).collect();
    let mut sorted = rows.clone();
    sorted.sort_unstable();
    let n = sorted.len();
    let median = match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2] as f64,
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) as f64 / 2.0,
    };
    let (min, max) = (sorted.first().copied().unwrap_or(0), sorted.last().copied().unwrap_or(0));
    let entropy: Vec<f64> = counts.iter().map(|c| label_entropy_bits(c)).collect();
    let mean_entropy = mean_label_entropy_bits(&counts);
    let natural = summary.natural;
    let mut value = json!({
        "stage": a.stage,
        "key": a.key,
        "dir": a.dir,
        "clients": n,
        "num_labels": names.len(),
        "label_names": names,
        "train_rows": rows.iter().sum::<u64>(),
        "test_rows": test_rows,
        "rows_per_client": rows,
        "rows_per_client_stats": { "min": min, "median": median, "max": max },
        "label_histogram": counts,
        "label_entropy_bits": entropy,
        "mean_label_entropy_bits": mean_entropy,
    });
    let mut text = format!("partition {} at {}\n", a.short_key(), a.dir.display());
    let first_ids: Vec<String> = natural.as_ref().map(|n| n.first_id_per_client.clone()).unwrap_or_default();
    if let Some(nat) = natural {
        text.push_str(&format!(
            "natural ids: one client per `{}` value, {} distinct, partition.max_clients = {}\n",
            nat.id_column, nat.distinct_ids, nat.max_clients
        ));
        value["natural"] = serde_json::to_value(&nat)?;
    }
    text.push_str(&format!(
        "clients {n}, train rows {} (per client min {min} / median {median} / max {max}), test rows {test_rows}, labels {}\n",
        rows.iter().sum::<u64>(),
        names.len()
    ));
    text.push_str(&format!(
        "mean per-client label entropy {mean_entropy:.3} bits (uniform over {} labels: {:.3})\n",
        names.len(),
        (names.len().max(1) as f64).log2()
    ));
    text.push_str("client   rows  entropy  labels (id:rows, largest first)\n");
    for (c, hist) in counts.iter().enumerate() {
        let mut nz: Vec<(usize, u64)> = hist.iter().copied().enumerate().filter(|(_, k)| *k > 0).collect();
        nz.sort_by(|x, y| y.1.cmp(&x.1).then(x.0.cmp(&y.0)));
        let labels: Vec<String> = nz.iter().map(|(l, k)| format!("{l}:{k}")).collect();
        let writer = first_ids.get(c).map(|w| format!("  [{}]", if w.is_empty() { "(empty id)" } else { w })).unwrap_or_default();
        text.push_str(&format!("{c:>6} {:>6} {:>8.3}  {}{writer}\n", rows[c], entropy[c], labels.join(" ")));
    }
    Ok((value, text))
}

#[cfg(test)]
mod tests {
    use super::carve_validation;

    #[test]
    fn validation_is_carved_per_client_stratified_and_disjoint() {
        // Two clients: 50 rows of labels 0/1 (30/20), 7 rows of label 2.
        let labels: Vec<u32> = (0..57).map(|i| if i < 30 { 0 } else if i < 50 { 1 } else { 2 }).collect();
        let parts = vec![(0..50).collect::<Vec<_>>(), (50..57).collect()];
        let (train, val) = carve_validation(parts.clone(), &labels, 0.2, 9);
        assert_eq!((train[0].len(), train[1].len(), val.len()), (40, 6, 11));
        let count = |rows: &[usize], l: u32| rows.iter().filter(|&&r| labels[r] == l).count();
        let val0: Vec<usize> = val.iter().copied().filter(|&r| r < 50).collect();
        assert_eq!((count(&val0, 0), count(&val0, 1)), (6, 4), "stratified within the client");
        let mut all: Vec<usize> = train.concat().into_iter().chain(val.iter().copied()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..57).collect::<Vec<_>>(), "disjoint, nothing lost");
        assert_eq!(carve_validation(parts.clone(), &labels, 0.2, 9), (train, val), "seeded");
        assert_ne!(carve_validation(parts.clone(), &labels, 0.2, 10).1, carve_validation(parts.clone(), &labels, 0.2, 9).1);
        let (kept, none) = carve_validation(parts.clone(), &labels, 0.0, 9);
        assert_eq!((kept, none.len()), (parts, 0));
        // A one-row client keeps its row.
        let (train, val) = carve_validation(vec![vec![0]], &labels, 0.5, 9);
        assert_eq!((train, val.len()), (vec![vec![0]], 0));
    }
}
