//! The report's tables: the final-results table (computed with polars group-bys over the metric
//! rows), time-to-target, and a plain [`TextTable`] that the HTML and Markdown writers both render.

use std::collections::BTreeMap;

use polars::prelude::*;

use crate::error::{ReportError, Result};
use crate::metrics::{method_label, method_rank, rows_to_dataframe, Curve};
use crate::plots::style::{format_bytes, format_count, format_seconds};
use crate::targets::TimeToTarget;

/// Column alignment in rendered tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Align {
    /// Text.
    Left,
    /// Numbers.
    Right,
}

/// A rendered table: header cells, body rows of display strings, per-column alignment.
#[derive(Debug, Clone, PartialEq)]
pub struct TextTable {
    /// Header cells.
    pub headers: Vec<String>,
    /// Body rows (same length as `headers`).
    pub rows: Vec<Vec<String>>,
    /// Per-column alignment.
    pub align: Vec<Align>,
}

/// Final results per method as a polars table, one row per curve in canonical method order:
/// `method`, `rounds`, `accuracy`, `best_accuracy`, `loss` (last round), `bytes_up_first` /
/// `bytes_up_last` (one client's upload in the first / last training round), `bytes_up_client_total`,
/// `cum_bytes_up`, `wall_seconds`, `trainable_params_first` / `trainable_params` (first / last phase,
/// null when unknown).
pub fn final_table(curves: &[Curve], trainable_params: &BTreeMap<String, u64>) -> Result<DataFrame> {
    let mut rows: Vec<_> = curves.iter().flat_map(|c| c.points.iter().cloned()).collect();
    if rows.is_empty() {
        return Err(ReportError::Invalid("no metric rows to tabulate".into()));
    }
    rows.sort_by_key(|r| (method_rank(&r.method), r.method.clone(), r.round));
    let df = rows_to_dataframe(&rows)?;
    let mut methods: Vec<String> = rows.iter().map(|r| r.method.clone()).collect();
    methods.dedup();

    let method_col = df.column("method")?.str()?;
    let (mut rounds, mut acc, mut best, mut loss) = (vec![], vec![], vec![], vec![]);
    let (mut up_first, mut up_last, mut up_total, mut cum, mut wall) = (vec![], vec![], vec![], vec![], vec![]);
    for m in &methods {
        // Rows are sorted by round, so a method's last row is its final evaluation.
        let sub = df.filter(&method_col.equal(m.as_str()))?;
        let last = sub.tail(Some(1));
        let trained = sub.filter(&sub.column("round")?.u32()?.gt(0))?;
        let first_trained = if trained.height() > 0 { trained.head(Some(1)) } else { last.clone() };
        rounds.push(last.column("round")?.u32()?.get(0));
        acc.push(last.column("accuracy")?.f64()?.get(0).map(|v| 100.0 * v));
        best.push(sub.column("accuracy")?.f64()?.max().map(|v| 100.0 * v));
        loss.push(last.column("loss")?.f64()?.get(0));
        up_first.push(first_trained.column("bytes_up_per_client")?.u64()?.get(0));
        up_last.push(last.column("bytes_up_per_client")?.u64()?.get(0));
        up_total.push(sub.column("bytes_up_per_client")?.u64()?.sum());
        cum.push(last.column("cum_bytes_up")?.u64()?.get(0));
        wall.push(last.column("wall_seconds")?.f64()?.get(0));
    }
    let params: Vec<Option<u64>> = methods.iter().map(|m| crate::metrics::trainable_for(m, trainable_params).1).collect();
    let params_first: Vec<Option<u64>> = methods.iter().map(|m| crate::metrics::trainable_for(m, trainable_params).0).collect();
    let table = DataFrame::new_infer_height(vec![
        Column::new("method".into(), methods),
        Column::new("rounds".into(), rounds),
        Column::new("accuracy".into(), acc),
        Column::new("best_accuracy".into(), best),
        Column::new("loss".into(), loss),
        Column::new("bytes_up_first".into(), up_first),
        Column::new("bytes_up_last".into(), up_last),
        Column::new("bytes_up_client_total".into(), up_total),
        Column::new("cum_bytes_up".into(), cum),
        Column::new("wall_seconds".into(), wall),
        Column::new("trainable_params_first".into(), params_first),
        Column::new("trainable_params".into(), params),
    ])?;
    Ok(table)
}

/// Display form of [`final_table`].
pub fn final_text_table(df: &DataFrame) -> Result<TextTable> {
    let methods = df.column("method")?.str()?;
    let rounds = df.column("rounds")?.u32()?;
    let acc = df.column("accuracy")?.f64()?;
    let best = df.column("best_accuracy")?.f64()?;
    let loss = df.column("loss")?.f64()?;
    let first = df.column("bytes_up_first")?.u64()?;
    let last = df.column("bytes_up_last")?.u64()?;
    let total = df.column("bytes_up_client_total")?.u64()?;
    let cum = df.column("cum_bytes_up")?.u64()?;
    let wall = df.column("wall_seconds")?.f64()?;
    let params = df.column("trainable_params")?.u64()?;
    let params_first = df.column("trainable_params_first")?.u64()?;
    let mut rows = Vec::with_capacity(df.height());
    for i in 0..df.height() {
        let (f, l) = (first.get(i).unwrap_or(0), last.get(i).unwrap_or(0));
        let per_round = if f == l {
            format_bytes(l as f64)
        } else {
            format!("{} → {}", format_bytes(f as f64), format_bytes(l as f64))
        };
        rows.push(vec![
            method_label(methods.get(i).unwrap_or("")),
            rounds.get(i).map(|r| r.to_string()).unwrap_or_default(),
            acc.get(i).map(|v| format!("{v:.2}")).unwrap_or_default(),
            best.get(i).map(|v| format!("{v:.2}")).unwrap_or_default(),
            loss.get(i).map(|v| format!("{v:.4}")).unwrap_or_default(),
            per_round,
            format_bytes(total.get(i).unwrap_or(0) as f64),
            format_bytes(cum.get(i).unwrap_or(0) as f64),
            match (params_first.get(i), params.get(i)) {
                (Some(f), Some(l)) if f != l => format!("{} → {}", format_count(f), format_count(l)),
                (_, Some(l)) => format_count(l),
                _ => "–".into(),
            },
            wall.get(i).map(format_seconds).unwrap_or_default(),
        ]);
    }
    Ok(TextTable {
        headers: [
            "Method",
            "Rounds",
            "Accuracy (%)",
            "Best acc. (%)",
            "Test loss",
            "Upload / client / round",
            "Upload / client (all rounds)",
            "Total upload (all clients)",
            "Trainable params",
            "Wall time",
        ]
        .map(String::from)
        .to_vec(),
        rows,
        align: [Align::Left].into_iter().chain(std::iter::repeat_n(Align::Right, 9)).collect(),
    })
}

/// Display form of the time-to-target results: one row per method (fraction rows of the first
/// fraction only when several are present).
pub fn time_to_target_table(ttt: &[TimeToTarget]) -> TextTable {
    let first_fraction = ttt.first().map(|t| t.fraction);
    let rows_of: Vec<&TimeToTarget> = ttt.iter().filter(|t| Some(t.fraction) == first_fraction).collect();
    let train_of = |m: &str| rows_of.iter().find(|t| t.method == m).and_then(|t| t.hit.as_ref()).map(|h| h.client_train_seconds);
    let (fft, lora) = (train_of(crate::metrics::FFT), train_of("lora"));
    let ratio = |x: f64, of: Option<f64>| of.filter(|v| *v > 0.0).map_or("–".to_string(), |v| format!("{:.2}×", x / v));
    let rows = rows_of
        .iter()
        .map(|t| {
            let mut row = vec![method_label(&t.method), format!("{}/{}", t.reached, t.seeds.max(1))];
            match &t.hit {
                Some(h) => row.extend([
                    h.round.to_string(),
                    format_seconds(h.client_train_seconds),
                    format_seconds(h.server_seconds),
                    format_bytes(h.cum_bytes_up as f64),
                    format_seconds(h.wall_seconds),
                    ratio(h.client_train_seconds, fft),
                    ratio(h.client_train_seconds, lora),
                ]),
                None => row.extend(["not reached".to_string(), "–".into(), "–".into(), "–".into(), "–".into(), "–".into(), "–".into()]),
            }
            row
        })
        .collect();
    let headers = ["Method", "Seeds reached", "Rounds", "Client training", "Server", "Upload (all clients)", "Wall", "Training vs FFT", "Training vs LoRA"];
    TextTable {
        headers: headers.map(String::from).to_vec(),
        rows,
        align: [Align::Left].into_iter().chain(std::iter::repeat_n(Align::Right, headers.len() - 1)).collect(),
    }
}

fn interval(mean: f64, half: Option<f64>) -> String {
    crate::replicates::Interval { n: 0, mean, half_width: half }.percent()
}

/// Final accuracy per method: mean ± CI, last-k mean, per seed, rates.
pub fn replicate_table(summary: &crate::summary::Summary) -> TextTable {
    let mut methods: Vec<&String> = summary.methods.keys().collect();
    methods.sort_by_key(|m| (method_rank(m), (*m).clone()));
    let rows = methods
        .into_iter()
        .map(|m| {
            let s = &summary.methods[m];
            vec![
                method_label(m),
                s.seeds.to_string(),
                interval(s.accuracy, s.accuracy_ci95),
                interval(s.last_k_accuracy, s.last_k_accuracy_ci95),
                s.accuracy_per_seed.iter().map(|a| format!("{:.2}", 100.0 * a)).collect::<Vec<_>>().join(", "),
                s.lr.map_or("–".into(), |v| format!("{v:e}")),
                s.head_lr.map_or("–".into(), |v| format!("{v:e}")),
            ]
        })
        .collect();
    let headers = [
        "Method".to_string(),
        "Seeds".into(),
        "Final accuracy (%)".into(),
        format!("Last-{} mean (%)", summary.last_k),
        "Per seed (%)".into(),
        "LR".into(),
        "Head LR".into(),
    ];
    TextTable { headers: headers.to_vec(), rows, align: [Align::Left].into_iter().chain(std::iter::repeat_n(Align::Right, 6)).collect() }
}

/// Bytes (adapter / head / switch) and seconds per method.
pub fn cost_table(summary: &crate::summary::Summary) -> TextTable {
    let mut methods: Vec<&String> = summary.methods.keys().collect();
    methods.sort_by_key(|m| (method_rank(m), (*m).clone()));
    let b = |v: u64| format_bytes(v as f64);
    let rows = methods
        .into_iter()
        .map(|m| {
            let c = &summary.methods[m].costs;
            let adapter_share = c.up_adapter_per_client as f64 / (c.up_adapter_per_client + c.up_head_per_client).max(1) as f64;
            vec![
                method_label(m),
                b(c.up_adapter_per_client),
                b(c.up_head_per_client),
                format!("{:.1} %", 100.0 * adapter_share),
                b(c.down_adapter_per_client),
                b(c.down_head_per_client),
                b(c.down_switch_per_client),
                b(c.cum_bytes_up),
                b(c.cum_bytes_down),
                format_seconds(c.client_train_seconds),
                format_seconds(c.server_seconds),
            ]
        })
        .collect();
    let headers = [
        "Method",
        "Up: adapter",
        "Up: head",
        "Adapter share of up",
        "Down: adapter",
        "Down: head",
        "Down: switch",
        "Upload (all clients)",
        "Download (all clients)",
        "Client training",
        "Server",
    ];
    TextTable {
        headers: headers.map(String::from).to_vec(),
        rows,
        align: [Align::Left].into_iter().chain(std::iter::repeat_n(Align::Right, headers.len() - 1)).collect(),
    }
}

/// Every seed's final and last-k accuracy per method.
pub fn seed_table(summary: &crate::summary::Summary) -> TextTable {
    let mut rows = Vec::new();
    for (seed, methods) in &summary.per_seed {
        let mut names: Vec<&String> = methods.keys().collect();
        names.sort_by_key(|m| (method_rank(m), (*m).clone()));
        for m in names {
            let f = &methods[m];
            rows.push(vec![
                seed.clone(),
                method_label(m),
                format!("{:.2}", 100.0 * f.final_accuracy),
                format!("{:.2}", 100.0 * f.last_k_accuracy),
                format_seconds(f.client_train_seconds),
                format_bytes(f.cum_bytes_up as f64),
            ]);
        }
    }
    TextTable {
        headers: ["Seed", "Method", "Final accuracy (%)", "Last-k mean (%)", "Client training", "Upload (all clients)"].map(String::from).to_vec(),
        rows,
        align: vec![Align::Right, Align::Left, Align::Right, Align::Right, Align::Right, Align::Right],
    }
}

/// The learning-rate grid of a tune summary: method, rate, validation score, final validation
/// accuracy, chosen.
pub fn tuning_table(tune: &serde_json::Value) -> TextTable {
    let mut rows = Vec::new();
    if let Some(methods) = tune.get("methods").and_then(serde_json::Value::as_object) {
        for (m, v) in methods {
            let chosen = v.get("chosen").and_then(serde_json::Value::as_f64);
            for p in v.get("points").and_then(serde_json::Value::as_array).into_iter().flatten() {
                let lr = p.get("lr").and_then(serde_json::Value::as_f64).unwrap_or(f64::NAN);
                let pct = |k: &str| p.get(k).and_then(serde_json::Value::as_f64).map_or("diverged".to_string(), |x| format!("{:.2}", 100.0 * x));
                rows.push(vec![
                    method_label(m),
                    format!("{lr:e}"),
                    pct("score"),
                    pct("final_accuracy"),
                    if chosen == Some(lr) { "chosen".into() } else { String::new() },
                ]);
            }
        }
    }
    TextTable {
        headers: ["Method", "LR", "Validation score (%)", "Final validation accuracy (%)", ""].map(String::from).to_vec(),
        rows,
        align: vec![Align::Left, Align::Right, Align::Right, Align::Right, Align::Left],
    }
}

/// A two-column key/value table from a JSON object, nested keys joined with `.`.
pub fn key_value_table(value: &serde_json::Value, key_header: &str, value_header: &str) -> TextTable {
    fn walk(prefix: &str, v: &serde_json::Value, out: &mut Vec<Vec<String>>) {
        match v {
            serde_json::Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    walk(&key, v, out);
                }
            }
            serde_json::Value::Number(n) => {
                let text = match n.as_f64() {
                    Some(f) if n.is_f64() && f != 0.0 && (f.abs() < 1e-3 || f.abs() >= 1e6) => format!("{f:.3e}"),
                    Some(f) if n.is_f64() => format!("{f:.6}").trim_end_matches('0').trim_end_matches('.').to_string(),
                    _ => n.to_string(),
                };
                out.push(vec![prefix.to_string(), text]);
            }
            serde_json::Value::String(s) => out.push(vec![prefix.to_string(), s.clone()]),
            other => out.push(vec![prefix.to_string(), other.to_string()]),
        }
    }
    let mut rows = Vec::new();
    walk("", value, &mut rows);
    TextTable { headers: vec![key_header.into(), value_header.into()], rows, align: vec![Align::Left, Align::Left] }
}
