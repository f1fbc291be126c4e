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
    let params: Vec<Option<u64>> = methods.iter().map(|m| trainable_for(m, trainable_params).1).collect();
    let params_first: Vec<Option<u64>> = methods.iter().map(|m| trainable_for(m, trainable_params).0).collect();
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

/// Trainable parameters of `method` in its first and last phase: SLoRA trains the sparse set in
/// Stage 1 (`slora-stage1`) and LoRA in Stage 2 (`slora-stage2`); other methods have one phase.
pub fn trainable_for(method: &str, trainable: &BTreeMap<String, u64>) -> (Option<u64>, Option<u64>) {
    if method == crate::metrics::SLORA {
        let last = trainable.get(crate::metrics::SLORA).or_else(|| trainable.get(crate::metrics::SLORA_STAGE2)).copied();
        let first = trainable.get(crate::metrics::SLORA_STAGE1).copied().or(last);
        (first, last)
    } else {
        let v = trainable.get(method).copied();
        (v, v)
    }
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

/// Display form of the time-to-target results: one row per method, rounds / time / upload per target.
pub fn time_to_target_table(ttt: &[TimeToTarget]) -> TextTable {
    let mut fractions: Vec<f64> = Vec::new();
    for t in ttt {
        if !fractions.iter().any(|f| (f - t.fraction).abs() < 1e-12) {
            fractions.push(t.fraction);
        }
    }
    let mut methods: Vec<String> = Vec::new();
    for t in ttt {
        if !methods.contains(&t.method) {
            methods.push(t.method.clone());
        }
    }
    let mut headers = vec!["Method".to_string()];
    for f in &fractions {
        let target = ttt.iter().find(|t| t.fraction == *f).map(|t| 100.0 * t.target_accuracy).unwrap_or(0.0);
        let p = 100.0 * f;
        headers.push(format!("Rounds to {p:.0}% ({target:.1}%)"));
        headers.push(format!("Time to {p:.0}%"));
        headers.push(format!("Upload to {p:.0}%"));
    }
    let rows = methods
        .iter()
        .map(|m| {
            let mut row = vec![method_label(m)];
            for f in &fractions {
                match ttt.iter().find(|t| &t.method == m && t.fraction == *f).and_then(|t| t.hit.as_ref()) {
                    Some(h) => {
                        row.push(h.round.to_string());
                        row.push(format_seconds(h.wall_seconds));
                        row.push(format_bytes(h.cum_bytes_up as f64));
                    }
                    None => row.extend(["not reached".to_string(), "–".into(), "–".into()]),
                }
            }
            row
        })
        .collect();
    let n = headers.len();
    TextTable { headers, rows, align: [Align::Left].into_iter().chain(std::iter::repeat_n(Align::Right, n - 1)).collect() }
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
