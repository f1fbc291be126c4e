//! Reports, regression comparison and export (issue 5): rendering from structured inputs with every
//! figure and table value checked, time-to-target on a known curve, SLoRA's two phases as one curve,
//! `metrics.parquet` as the federation stages write it, `pipeline compare` passing and failing (on a
//! deliberately changed copy of the committed baseline), `pipeline sweep` point expansion, and
//! `pipeline export` against the layout of the peft fixture adapter.

use crate::common::{repo, shared};
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use slora_metrics::RoundMetrics;
use slora_report::metrics::Metrics;
use slora_report::targets::{first_hit, time_to_target};
use slora_report::{build_report, compare, tables, write_report, Baseline, Summary};


fn row(method: &str, round: u32, accuracy: f64, bytes_up: u64, cum: u64, wall: f64) -> RoundMetrics {
    RoundMetrics {
        method: method.into(),
        round,
        accuracy: Some(accuracy),
        loss: Some(2.0 - accuracy),
        train_loss: (round > 0).then_some(1.9 - accuracy),
        bytes_up_per_client: bytes_up,
        bytes_down_per_client: bytes_up,
        cum_bytes_up: cum,
        wall_seconds: wall,
        clients: if round == 0 { 0 } else { 2 },
        ..Default::default()
    }
}

/// FFT, LoRA and SLoRA (2 sparse + 2 LoRA rounds, Stage 2 continuing Stage 1's numbering) with
/// round numbers, bytes and seconds chosen so every table value is known.
fn known_metrics() -> Metrics {
    let mut rows = vec![
        row("fft", 0, 0.10, 0, 0, 1.0),
        row("fft", 1, 0.50, 1000, 2000, 11.0),
        row("fft", 2, 0.70, 1000, 4000, 21.0),
        row("fft", 3, 0.76, 1000, 6000, 31.0),
        row("fft", 4, 0.80, 1000, 8000, 41.0),
        row("lora", 0, 0.10, 0, 0, 1.0),
        row("lora", 1, 0.30, 40, 80, 6.0),
        row("lora", 2, 0.45, 40, 160, 11.0),
        row("lora", 3, 0.55, 40, 240, 16.0),
        row("lora", 4, 0.60, 40, 320, 21.0),
        row("slora-stage1", 0, 0.10, 0, 0, 1.0),
        row("slora-stage1", 1, 0.40, 20, 40, 5.0),
        row("slora-stage1", 2, 0.60, 20, 80, 9.0),
        row("slora-stage2", 2, 0.60, 0, 80, 9.5),
        row("slora-stage2", 3, 0.77, 40, 160, 14.5),
        row("slora-stage2", 4, 0.79, 40, 240, 19.5),
    ];
    rows.reverse(); // readers must not rely on file order
    Metrics { rows }
}

fn known_inputs() -> slora_report::ReportInputs {
    let mut inputs = slora_report::demo::demo_inputs();
    inputs.run_name = "known".into();
    inputs.metrics = known_metrics();
    inputs.trainable_params =
        BTreeMap::from([("fft".into(), 250), ("lora".into(), 10), ("slora-stage1".into(), 5), ("slora-stage2".into(), 10)]);
    inputs
}

#[test]
fn time_to_target_on_a_known_curve() {
    let curves = known_metrics().curves().unwrap();
    let slora = curves.iter().find(|c| c.method == "slora").unwrap();
    // FFT's final accuracy is 0.80: targets 0.76 (95 %) and 0.792 (99 %).
    let ttt = time_to_target(&curves, &[0.95, 0.99]);
    let get = |m: &str, f: f64| ttt.iter().find(|t| t.method == m && t.fraction == f).unwrap();
    assert!((get("fft", 0.95).target_accuracy - 0.76).abs() < 1e-12);
    // FFT reaches 0.76 exactly at round 3 (>= counts), 0.792 at round 4.
    let hit = get("fft", 0.95).hit.clone().unwrap();
    assert_eq!((hit.round, hit.wall_seconds, hit.cum_bytes_up), (3, 31.0, 6000));
    assert_eq!(get("fft", 0.99).hit.as_ref().unwrap().round, 4);
    // SLoRA: 0.77 at combined round 3 (Stage 2's first trained round), never 0.792.
    let hit = get("slora", 0.95).hit.clone().unwrap();
    assert_eq!((hit.round, hit.wall_seconds, hit.cum_bytes_up), (3, 14.5, 160));
    assert!(get("slora", 0.99).hit.is_none());
    // LoRA never gets to 0.76.
    assert!(get("lora", 0.95).hit.is_none());
    assert_eq!(first_hit(slora, 0.6).unwrap().round, 2);
    // Without FFT there is no target at all.
    let no_fft: Vec<_> = curves.into_iter().filter(|c| c.method != "fft").collect();
    assert!(time_to_target(&no_fft, &[0.95]).is_empty());
}

#[test]
fn slora_phases_become_one_cumulative_curve_whether_stage2_continues_or_restarts() {
    let continuing = known_metrics().curves().unwrap();
    let slora = continuing.iter().find(|c| c.method == "slora").unwrap();
    let rounds: Vec<u32> = slora.points.iter().map(|p| p.round).collect();
    assert_eq!(rounds, [0, 1, 2, 2, 3, 4]);
    assert_eq!(slora.switch_round, Some(2));
    assert_eq!(slora.last().unwrap().cum_bytes_up, 240);

    // The same run written by a Stage 2 that counts rounds, bytes and seconds from zero.
    let mut restarted = known_metrics();
    for r in restarted.rows.iter_mut().filter(|r| r.method == "slora-stage2") {
        r.round -= 2;
        r.cum_bytes_up -= 80;
        r.wall_seconds -= 9.0;
    }
    let curves = restarted.curves().unwrap();
    let again = curves.iter().find(|c| c.method == "slora").unwrap();
    // Debug text compares NaN (round 0's train loss) as equal.
    assert_eq!(format!("{:?}", again.points), format!("{:?}", slora.points));
    assert_eq!(again.switch_round, Some(2));
}

#[test]
fn final_table_values_match_the_inputs() {
    let curves = known_metrics().curves().unwrap();
    let trainable = known_inputs().trainable_params;
    let df = tables::final_table(&curves, &trainable).unwrap();
    let method_col = df.column("method").unwrap().str().unwrap();
    let methods: Vec<&str> = (0..df.height()).map(|i| method_col.get(i).unwrap()).collect();
    assert_eq!(methods, ["fft", "lora", "slora"]);
    let f64s = |c: &str| df.column(c).unwrap().f64().unwrap().into_no_null_iter().collect::<Vec<f64>>();
    let u64s = |c: &str| {
        let col = df.column(c).unwrap().u64().unwrap();
        (0..df.height()).map(|i| col.get(i)).collect::<Vec<Option<u64>>>()
    };
    let acc = f64s("accuracy");
    assert!((acc[0] - 80.0).abs() < 1e-9 && (acc[1] - 60.0).abs() < 1e-9 && (acc[2] - 79.0).abs() < 1e-9);
    assert_eq!(u64s("cum_bytes_up"), [Some(8000), Some(320), Some(240)]);
    // One client's upload: per round (first / last training round) and summed over all rounds.
    assert_eq!(u64s("bytes_up_first"), [Some(1000), Some(40), Some(20)]);
    assert_eq!(u64s("bytes_up_last"), [Some(1000), Some(40), Some(40)]);
    assert_eq!(u64s("bytes_up_client_total"), [Some(4000), Some(160), Some(120)]);
    assert_eq!(u64s("trainable_params"), [Some(250), Some(10), Some(10)]);
    assert_eq!(u64s("trainable_params_first"), [Some(250), Some(10), Some(5)]);
    assert_eq!(f64s("wall_seconds"), [41.0, 21.0, 19.5]);
    let text = tables::final_text_table(&df).unwrap();
    assert_eq!(text.rows[2][0], "SLoRA");
    assert_eq!(text.rows[2][2], "79.00");
    assert_eq!(text.rows[2][5], "20 B → 40 B");
    assert_eq!(text.rows[2][8], "5 → 10");
}

/// Whether an SVG has a `<text>` element whose whole content is `text`.
fn svg_has_text(svg: &str, text: &str) -> bool {
    svg.contains(&format!(">\n{text}\n</text>")) || svg.contains(&format!(">{text}</text>"))
}

#[test]
fn rendered_report_has_every_figure_table_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("known");
    let (report, summary) = build_report(&known_inputs()).unwrap();
    write_report(&out, &report, &[("summary.json", summary.to_json())]).unwrap();
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();

    let expected = ["accuracy_vs_round", "accuracy_vs_bytes", "loss_vs_round", "partition_heatmap", "spectra"];
    for id in expected {
        let start = html.find(&format!("data-plot=\"{id}\"")).unwrap_or_else(|| panic!("figure {id} missing"));
        let figure = &html[start..start + html[start..].find("</figure>").unwrap()];
        assert!(figure.contains("<svg") && figure.contains("</svg>"), "{id}: no inline svg");
        assert!(figure.matches("<text").count() >= 5, "{id}: too little text (axes, titles)");
        let svg = std::fs::read_to_string(out.join("figures").join(format!("{id}.svg"))).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("viewBox"), "{id}.svg is not a standalone svg");
    }
    // Axis titles with units and legends naming every method.
    let fig = |id: &str| std::fs::read_to_string(out.join("figures").join(format!("{id}.svg"))).unwrap();
    for (id, needle) in [
        ("accuracy_vs_round", "Test accuracy (%)"),
        ("accuracy_vs_round", "95% of FFT"),
        ("accuracy_vs_round", "SLoRA: sparse → LoRA"),
        ("accuracy_vs_bytes", "Cumulative bytes uploaded by all clients (log scale)"),
        ("accuracy_vs_bytes", "1.00 kB"),
        ("partition_heatmap", "talk.religion.misc"),
        ("spectra", "LoRA rank r = 8"),
    ] {
        assert!(fig(id).contains(needle), "{id}: `{needle}` missing");
    }
    for label in ["FFT", "LoRA", "SLoRA"] {
        assert!(svg_has_text(&fig("accuracy_vs_round"), label), "legend lacks {label}");
    }
    // The partition heatmap writes every non-zero count of the input in its cell.
    let p = known_inputs().partition.unwrap();
    let heat = fig("partition_heatmap");
    for n in p.counts.iter().flatten().filter(|&&n| n > 0) {
        assert!(svg_has_text(&heat, &n.to_string()), "count {n} not drawn");
    }
    // Table values.
    for needle in ["<td class=\"num\">79.00</td>", "<td class=\"num\">80.00</td>", "<td class=\"num\">60.00</td>", "not reached", "max_abs_logit_diff"] {
        assert!(html.contains(needle), "index.html lacks {needle}");
    }
    // Self-contained: no scripts, nothing fetched (the SVG namespace is an identifier, not a fetch).
    assert!(!html.contains("<script") && !html.contains("<link") && !html.contains("src=\"http"));
    let without_ns = html.replace("xmlns=\"http://www.w3.org/2000/svg\"", "");
    assert!(!without_ns.contains("http://") && !without_ns.contains("https://"));
    // Markdown references the same figures; summary.json reads back.
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    for id in expected {
        assert!(md.contains(&format!("(figures/{id}.svg)")));
    }
    let back = Summary::read(&out.join("summary.json")).unwrap();
    assert_eq!(back.time_to_target, summary.time_to_target);
    for (m, s) in &summary.methods {
        let b = &back.methods[m];
        assert!((b.accuracy - s.accuracy).abs() < 1e-12 && (b.loss - s.loss).abs() < 1e-12, "{m}");
        assert_eq!((b.rounds, b.cum_bytes_up, b.trainable_params), (s.rounds, s.cum_bytes_up, s.trainable_params));
    }
    assert_eq!(back.methods["slora"].rounds, 4);
    assert_eq!(back.methods["fft"].bytes_up_per_client_total, 4000);
    assert_eq!(back.methods["slora"].trainable_params, Some(10));
    // Re-rendering replaces the folder and leaves no temporary siblings behind.
    write_report(&out, &report, &[]).unwrap();
    assert!(!out.join("summary.json").exists());
    let names: Vec<String> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into()).collect();
    assert_eq!(names, ["known"]);
}

#[test]
fn metrics_parquet_written_by_federation_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("metrics.parquet");
    let fed = |round: u32, acc: Option<f64>| RoundMetrics {
        method: "slora-stage1".into(),
        round,
        accuracy: acc,
        loss: acc.map(|a| 1.0 - a),
        train_loss: (round > 0).then_some(0.5),
        bytes_up_per_client: 123,
        bytes_down_per_client: 456,
        cum_bytes_up: 246 * u64::from(round),
        wall_seconds: 1.5 * f64::from(round),
        clients: 2,
        ..Default::default()
    };
    // Round 1 was not evaluated (eval_every = 2): null accuracy and loss.
    slora_metrics::write_parquet(&path, &[fed(0, Some(0.1)), fed(1, None), fed(2, Some(0.4))]).unwrap();
    let m = Metrics::read_parquet_files(&[&path]).unwrap();
    assert_eq!(m.rows.len(), 3);
    assert!(m.rows[1].accuracy.is_none() && m.rows[0].train_loss.is_none());
    assert_eq!((m.rows[2].cum_bytes_up, m.rows[2].bytes_down_per_client, m.rows[2].clients), (492, 456, 2));
    let curves = m.curves().unwrap();
    assert_eq!(curves[0].last_evaluated().unwrap().round, 2);
    assert_eq!(curves[0].evaluated().count(), 2);
    let summary = Summary::from_curves("x", &curves, &BTreeMap::new());
    assert_eq!(summary.methods["slora-stage1"].accuracy, 0.4);
    // A file without the schema's columns is refused with the column named.
    let err = Metrics::read_parquet_files(&[shared("datasets/sst2.parquet")]).unwrap_err().to_string();
    assert!(err.contains("method") && err.contains("sst2.parquet"), "{err}");
}

fn pipeline(args: &[&str]) -> std::process::Output {
    crate::common::pipeline_in(&repo()).args(args).output().unwrap()
}

#[test]
fn compare_passes_on_the_baseline_and_fails_on_a_changed_one() {
    let dir = tempfile::tempdir().unwrap();
    let (_, summary) = build_report(&known_inputs()).unwrap();
    let run = dir.path().join("summary.json");
    std::fs::write(&run, summary.to_json()).unwrap();

    // In process: identical passes; +3 pp accuracy and a single byte both drift.
    let base = Baseline::from_summary(summary.clone());
    assert!(!compare(&summary, &base).has_drift());
    let mut moved = base.clone();
    moved.summary.methods.get_mut("lora").unwrap().accuracy += 0.03;
    moved.summary.methods.get_mut("fft").unwrap().cum_bytes_up += 1;
    let result = compare(&summary, &moved);
    assert_eq!(result.drift_count(), 2);
    let text = result.render_text();
    assert!(text.lines().any(|l| l.starts_with("> lora") && l.contains("accuracy") && l.contains("DRIFT")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("> fft") && l.contains("cum_bytes_up") && l.contains("exact")), "{text}");
    // Within tolerance (1 pp of the default 2 pp) is not drift.
    let mut near = base.clone();
    near.summary.methods.get_mut("lora").unwrap().accuracy += 0.01;
    assert!(!compare(&summary, &near).has_drift());

    // Through the binary, with the committed CI baseline: its own summary passes, a deliberately
    // changed copy fails with exit code 1 and names the metric.
    let committed = repo().join("tests/baselines/ci.json");
    let out = pipeline(&["compare", committed.to_str().unwrap(), committed.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK:"));
    let mut changed: Value = serde_json::from_str(&std::fs::read_to_string(&committed).unwrap()).unwrap();
    let acc = changed["methods"]["slora"]["accuracy"].as_f64().unwrap();
    changed["methods"]["slora"]["accuracy"] = serde_json::json!(acc + 0.05);
    let changed_path = dir.path().join("changed.json");
    std::fs::write(&changed_path, serde_json::to_string_pretty(&changed).unwrap()).unwrap();
    let out = pipeline(&["compare", committed.to_str().unwrap(), changed_path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.lines().any(|l| l.starts_with("> slora") && l.contains("accuracy")), "{stdout}");
    assert!(stdout.contains("DRIFT: 1 of"), "{stdout}");
    // RUN may be an artifacts directory: its pipeline.lock names the current report artifact.
    let artifacts = dir.path().join("artifacts");
    std::fs::create_dir_all(artifacts.join("report/abc123")).unwrap();
    std::fs::copy(&committed, artifacts.join("report/abc123/summary.json")).unwrap();
    let lock = serde_json::json!({"schema": 1, "stages": {"report": {"key": "abc123", "code_version": 1, "params": {}, "upstream": {}, "outs": {}}}});
    std::fs::write(artifacts.join("pipeline.lock"), lock.to_string()).unwrap();
    let out = pipeline(&["compare", artifacts.to_str().unwrap(), changed_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("report/abc123/summary.json"));
    // A missing run is an error (exit 2) naming the path.
    let out = pipeline(&["compare", "/nonexistent/run", committed.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/run"));
}

#[test]
fn sweep_points_expand_grids_and_extra_points() {
    use slora_pipeline::commands::sweep::{expand_points, point_label, point_slug};
    let points = expand_points(
        &["partition.alpha=1000,1,0.1".into()],
        &["partition.scheme=pathological;partition.classes_per_client=2".into()],
    )
    .unwrap();
    let flat: Vec<Vec<String>> =
        points.iter().map(|p| p.iter().map(|o| format!("{}={}", o.key, o.value)).collect()).collect();
    assert_eq!(
        flat,
        [
            vec!["partition.alpha=1000"],
            vec!["partition.alpha=1"],
            vec!["partition.alpha=0.1"],
            vec!["partition.scheme=pathological", "partition.classes_per_client=2"],
        ]
    );
    assert_eq!(point_slug(&points[2]), "alpha-0.1");
    assert_eq!(point_slug(&points[3]), "scheme-pathological-classes_per_client-2");
    let two_axes = expand_points(&["a.x=1,2".into(), "a.y=3,4".into()], &[]).unwrap();
    assert_eq!(two_axes.len(), 4);
    let mut cfg = slora_pipeline::Config::default();
    cfg.partition.alpha = 0.1;
    assert_eq!(point_label(&cfg, &points[2]), "Dir α=0.1");
    assert!(expand_points(&["partition.alpha".into()], &[]).unwrap_err().to_string().contains("--grid partition.alpha"));
}

#[test]
fn sweep_force_rebuilds_each_distinct_stage_output_once() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tiny.toml");
    std::fs::write(&cfg, crate::common::tiny_toml(5, 64, 32, "[baselines]\nmethods = [\"lora\"]\n")).unwrap();
    // Two points that differ only in stage 2: partition, stage1 and decompose are shared.
    let sweep = |force: bool| -> String {
        let mut cmd = crate::common::pipeline_in(dir.path());
        cmd.arg("--config").arg(&cfg).args(["--set", "stage1.rounds=1", "--set", "stage2.rounds=1"]);
        if force {
            cmd.arg("--force");
        }
        let out = cmd.args(["sweep", "--grid", "stage2.lr=0.001,0.002", "--name", "lr"]).env("RUST_LOG", "info").output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "sweep failed:\n{log}");
        log
    };
    let count = |log: &str, what: &str| log.lines().filter(|l| l.contains(what)).count();
    let first = sweep(false);
    assert_eq!(count(&first, "partition: up to date"), 1, "{first}");
    let again = sweep(false);
    assert_eq!(count(&again, ": running ("), 0, "a plain rerun rebuilds nothing:\n{again}");
    let forced = sweep(true);
    for (stage, runs) in [("partition", 1), ("stage1", 1), ("decompose", 1), ("stage2", 2), ("baselines", 1), ("report", 2)] {
        assert_eq!(count(&forced, &format!("{stage}: running (")), runs, "{stage} under --force:\n{forced}");
    }
    assert_eq!(count(&forced, "forced)"), 8, "{forced}");
}

#[test]
fn sweep_report_tabulates_the_gap_to_fft_per_point() {
    let points = slora_report::demo::demo_sweep_points();
    let report = slora_report::build_sweep_report("s", Vec::new(), &points).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_report(&dir.path().join("s"), &report, &[]).unwrap();
    let html = std::fs::read_to_string(dir.path().join("s/index.html")).unwrap();
    for id in ["gap_vs_heterogeneity", "accuracy_vs_heterogeneity"] {
        assert!(html.contains(&format!("data-plot=\"{id}\"")), "{id} missing");
    }
    // Every gap cell is FFT's final accuracy minus the method's, in points, from the point's summary.
    let df = slora_report::sweep::accuracy_matrix(&points).unwrap();
    assert_eq!(df.height(), 4);
    for p in &points {
        let fft = p.summary.methods["fft"].accuracy;
        for m in ["lora", "sft", "slora"] {
            let gap = 100.0 * (fft - p.summary.methods[m].accuracy);
            assert!(gap > 0.0);
            assert!(html.contains(&format!("<td class=\"num\">{gap:+.2}</td>")), "{m} at {}: {gap:+.2} missing", p.label);
        }
    }
    let gaps = slora_report::sweep::gap_series(&points);
    let lora = &gaps.iter().find(|(m, _)| m == "lora").unwrap().1;
    assert!(lora.windows(2).all(|w| w[1].unwrap() > w[0].unwrap()), "the demo's LoRA gap grows with skew");
    let svg = std::fs::read_to_string(dir.path().join("s/figures/gap_vs_heterogeneity.svg")).unwrap();
    for p in &points {
        assert!(svg_has_text(&svg, &p.label), "x axis lacks {}", p.label);
    }
}

/// A 5-label text parquet (the fixture adapter's head size) with train and test rows.
fn write_five_label_data(path: &Path) {
    use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
    let topics = ["football goal keeper", "stock market shares", "battery electric car", "court judge ruling", "rain storm forecast"];
    let (mut text, mut label, mut split) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..60 {
        let l = i % 5;
        text.push(format!("{} report number {} about {}", topics[l], i, topics[(l + i / 5) % 5].split(' ').next().unwrap()));
        label.push(l as i64);
        split.push(if i < 45 { "train" } else { "test" });
    }
    let batch = RecordBatch::try_from_iter(vec![
        ("text", Arc::new(StringArray::from(text)) as ArrayRef),
        ("label", Arc::new(Int64Array::from(label)) as ArrayRef),
        ("split", Arc::new(StringArray::from(split)) as ArrayRef),
    ])
    .unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(&batch).unwrap();
    w.close().unwrap();
}

fn safetensors_layout(path: &Path) -> BTreeMap<String, Vec<usize>> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors().into_iter().map(|(k, v)| (k, v.shape().to_vec())).collect()
}

fn tensor(path: &Path, name: &str) -> candle_core::Tensor {
    candle_core::safetensors::load(path, &candle_core::Device::Cpu).unwrap().remove(name).unwrap_or_else(|| panic!("{name} missing"))
}

#[test]
fn export_writes_the_fixture_adapter_layout_and_a_merged_transformers_model() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("five.parquet");
    write_five_label_data(&data);
    // The fixture adapter's settings: r = 4, alpha = 8, the six BERT targets, classifier saved.
    let config = format!(
        r#"
[run]
name = "export"
threads = 1
[data]
source = "{data}"
text_column = "text"
max_len = 16
[model]
source = "{model}"
[partition]
clients = 2
scheme = "iid"
[federation]
clients_per_round = 2
batch_size = 16
[adapter]
modules_to_save = ["classifier"]
[stage1]
rounds = 1
[lora]
r = 4
lora_alpha = 8.0
[stage2]
rounds = 1
[baselines]
methods = ["lora"]
"#,
        data = data.display(),
        model = shared("models/paraphrase-MiniLM-L3-v2").display()
    );
    let cfg_path = dir.path().join("export.toml");
    std::fs::write(&cfg_path, config).unwrap();
    let run = |args: &[&str]| {
        let out = crate::common::pipeline_in(dir.path()).arg("--config").arg(&cfg_path).args(args).output().unwrap();
        assert!(out.status.success(), "pipeline {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    // Export before training names what to run.
    let early = crate::common::pipeline_in(dir.path()).arg("--config").arg(&cfg_path).arg("export").output().unwrap();
    assert!(!early.status.success() && String::from_utf8_lossy(&early.stderr).contains("run `pipeline stage2` first"));
    run(&["stage2"]);
    run(&["baselines"]);
    let slora_out = dir.path().join("out-slora");
    let lora_out = dir.path().join("out-lora");
    run(&["export", "--method", "slora", "--merged", "--out", slora_out.to_str().unwrap()]);
    run(&["export", "--method", "lora", "--out", lora_out.to_str().unwrap()]);

    let fixture = shared("fixtures/parity/bert-minilm-l3/lora-adapter");
    let want = safetensors_layout(&fixture.join("adapter_model.safetensors"));
    let fixture_cfg: Value = serde_json::from_str(&std::fs::read_to_string(fixture.join("adapter_config.json")).unwrap()).unwrap();
    for out in [&slora_out, &lora_out] {
        let adapter = out.join("adapter");
        assert_eq!(safetensors_layout(&adapter.join("adapter_model.safetensors")), want, "{}", adapter.display());
        let cfg: Value = serde_json::from_str(&std::fs::read_to_string(adapter.join("adapter_config.json")).unwrap()).unwrap();
        for key in ["r", "lora_alpha", "peft_type", "task_type", "bias", "use_dora", "use_rslora", "fan_in_fan_out"] {
            assert_eq!(cfg[key].as_f64().map(Value::from).unwrap_or(cfg[key].clone()), fixture_cfg[key].as_f64().map(Value::from).unwrap_or(fixture_cfg[key].clone()), "{key}");
        }
        let set = |v: &Value| v.as_array().unwrap().iter().map(|s| s.as_str().unwrap().to_string()).collect::<BTreeSet<_>>();
        assert_eq!(set(&cfg["target_modules"]), set(&fixture_cfg["target_modules"]));
        assert!(set(&cfg["modules_to_save"]).contains("classifier"));
        // peft's safetensors carry {"format": "pt"} metadata.
        let bytes = std::fs::read(adapter.join("adapter_model.safetensors")).unwrap();
        let (_, meta) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        assert_eq!(meta.metadata().as_ref().and_then(|m| m.get("format")).map(String::as_str), Some("pt"));
    }
    // The LoRA baseline applies to the pretrained model; SLoRA's adapter to the exported corrected base.
    let lora_cfg: Value = serde_json::from_str(&std::fs::read_to_string(lora_out.join("adapter/adapter_config.json")).unwrap()).unwrap();
    assert!(lora_cfg["base_model_name_or_path"].as_str().unwrap().ends_with("paraphrase-MiniLM-L3-v2"));
    let slora_cfg: Value = serde_json::from_str(&std::fs::read_to_string(slora_out.join("adapter/adapter_config.json")).unwrap()).unwrap();
    assert_eq!(Path::new(slora_cfg["base_model_name_or_path"].as_str().unwrap()), std::fs::canonicalize(slora_out.join("base")).unwrap());

    // The merged model: exactly the tensors transformers' save_pretrained writes for this model
    // (BertForSequenceClassification, the fixture's 57 keys), 5 labels, config naming the class.
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(shared("fixtures/parity/bert-minilm-l3/expected.json")).unwrap()).unwrap();
    let keys: BTreeSet<String> = expected["weights"]["save_pretrained_keys"].as_array().unwrap().iter().map(|k| k.as_str().unwrap().into()).collect();
    let merged = slora_out.join("merged/model.safetensors");
    let layout = safetensors_layout(&merged);
    assert_eq!(layout.keys().cloned().collect::<BTreeSet<_>>(), keys);
    assert_eq!(layout["classifier.weight"], [5, 384]);
    let mcfg: Value = serde_json::from_str(&std::fs::read_to_string(slora_out.join("merged/config.json")).unwrap()).unwrap();
    assert_eq!(mcfg["architectures"][0], "BertForSequenceClassification");
    assert_eq!(mcfg["id2label"].as_object().unwrap().len(), 5);
    assert!(slora_out.join("merged/tokenizer.json").is_file());
    // Merged = corrected base + (alpha / r) · B·A, and the head is the adapter's.
    let module = "bert.encoder.layer.1.attention.self.value";
    let a = tensor(&slora_out.join("adapter/adapter_model.safetensors"), &format!("base_model.model.{module}.lora_A.weight"));
    let b = tensor(&slora_out.join("adapter/adapter_model.safetensors"), &format!("base_model.model.{module}.lora_B.weight"));
    let w0 = tensor(&slora_out.join("base/model.safetensors"), &format!("{module}.weight"));
    let w = tensor(&merged, &format!("{module}.weight"));
    let want_w = (w0 + (b.matmul(&a).unwrap() * 2.0).unwrap()).unwrap();
    let diff = (w - want_w).unwrap().abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    assert!(diff < 1e-5, "merged weight differs by {diff}");
    let head = tensor(&slora_out.join("adapter/adapter_model.safetensors"), "base_model.model.classifier.weight");
    let merged_head = tensor(&merged, "classifier.weight");
    assert_eq!(head.to_vec2::<f32>().unwrap(), merged_head.to_vec2::<f32>().unwrap());

    // The merged model alone (no adapter, nothing trainable) reproduces Stage 2's final evaluation.
    let lock: Value = serde_json::from_str(&std::fs::read_to_string(dir.path().join("artifacts/pipeline.lock")).unwrap()).unwrap();
    let artifact = |stage: &str| dir.path().join("artifacts").join(stage).join(lock["stages"][stage]["key"].as_str().unwrap());
    let test = slora_data::read_shard(&artifact("partition").join("test.parquet")).unwrap();
    let rows = slora_metrics::read_parquet(&artifact("stage2").join("metrics.parquet")).unwrap();
    let last = rows.last().unwrap();
    let enc = slora_model::EncoderConfig::from_file(&slora_out.join("merged/config.json")).unwrap();
    let weights = slora_model::Weights::load(&merged, &enc).unwrap();
    let spec = slora_model::TrainSpec::new(slora_model::Mode::Frozen, 5, 0);
    let (model, init) = slora_model::Classifier::new(&enc, &weights, &spec).unwrap();
    assert!(init.initialised.is_empty(), "the merged file lacks {:?}", init.initialised);
    let batches: Vec<slora_model::Batch> = test
        .input_ids
        .chunks(8)
        .zip(test.labels.chunks(8))
        .map(|(ids, labels)| slora_model::Batch::collate(ids, labels, enc.pad_token_id).unwrap())
        .collect();
    let eval = slora_model::evaluate(&model, &batches).unwrap();
    assert_eq!(eval.rows, test.labels.len());
    assert_eq!(Some(eval.accuracy), last.accuracy, "merged accuracy");
    assert!((eval.loss - last.loss.unwrap()).abs() < 1e-4, "merged loss {} vs stage 2 {}", eval.loss, last.loss.unwrap());

    // The report stage on these artifacts: published to <report.dir>/<run.name>/, every figure, no FFT
    // (so no time-to-target), SLoRA's two phases as one method; cached on a rerun, and a deleted
    // published copy comes back.
    run(&["report"]);
    let published = dir.path().join("reports/export");
    let html = std::fs::read_to_string(published.join("index.html")).unwrap();
    for id in ["accuracy_vs_round", "accuracy_vs_bytes", "loss_vs_round", "partition_heatmap", "spectra"] {
        assert!(html.contains(&format!("data-plot=\"{id}\"")), "{id} missing");
    }
    assert!(html.contains("FFT was not run"));
    let summary = Summary::read(&published.join("summary.json")).unwrap();
    assert_eq!(summary.methods.keys().map(String::as_str).collect::<Vec<_>>(), ["lora", "slora"]);
    assert!((summary.methods["slora"].accuracy - last.accuracy.unwrap()).abs() < 1e-12);
    assert_eq!(summary.methods["slora"].rounds, 2);
    std::fs::remove_dir_all(&published).unwrap();
    let out = crate::common::pipeline_in(dir.path()).arg("--config").arg(&cfg_path).arg("report").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("report: up to date"));
    assert!(published.join("index.html").is_file());
}

/// The CI regression run (issue 5): configs/ci.toml end to end through the real binary, then its
/// summary against the committed tests/baselines/ci.json with per-metric tolerances. A drift fails
/// this test with compare's readable diff. To accept an intended change, rerun the pipeline and
/// `pipeline compare <artifacts> tests/baselines/ci.json --bless` (scripts/ci_regression.sh).
#[test]
fn ci_regression_run_matches_the_committed_baseline() {
    let dir = tempfile::tempdir().unwrap();
    let artifacts = dir.path().join("artifacts");
    let reports = dir.path().join("reports");
    let start = std::time::Instant::now();
    let out = pipeline(&[
        "--config", "configs/ci.toml",
        "--artifacts", artifacts.to_str().unwrap(),
        "--set", &format!("report.dir={}", reports.display()),
        "all",
    ]);
    assert!(out.status.success(), "ci run failed: {}", String::from_utf8_lossy(&out.stderr));
    eprintln!("ci pipeline: {:.0} s (budget 300 s)", start.elapsed().as_secs_f64());
    assert!(reports.join("ci/index.html").is_file(), "no report rendered");
    let baseline = repo().join("tests/baselines/ci.json");
    let out = pipeline(&["compare", artifacts.to_str().unwrap(), baseline.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "metrics drifted from tests/baselines/ci.json:\n{stdout}");
    assert!(stdout.contains("OK:"), "{stdout}");
}
