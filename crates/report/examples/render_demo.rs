//! Renders the synthetic demo report (see `slora_report::demo`) into the folder given as the first
//! argument (default `reports/demo`); with `sweep` as the second argument, the demo sweep comparison:
//! `cargo run -p slora-report --example render_demo -- DIR [sweep]`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "reports/demo".into());
    let dir = std::path::Path::new(&dir);
    if std::env::args().nth(2).as_deref() == Some("sweep") {
        let points = slora_report::demo::demo_sweep_points();
        let report = slora_report::build_sweep_report("demo-sweep", vec![("Data".into(), "synthetic demo input (not measured)".into())], &points)?;
        slora_report::write_report(dir, &report, &[])?;
    } else {
        let inputs = slora_report::demo::demo_inputs();
        let (report, summary) = slora_report::build_report(&inputs)?;
        slora_report::write_report(dir, &report, &[("summary.json", summary.to_json())])?;
    }
    println!("{}", dir.join("index.html").display());
    Ok(())
}
