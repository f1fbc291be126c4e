//! Renders the synthetic demo report (see `slora_report::demo`) into the folder given as the first
//! argument (default `reports/demo`): `cargo run -p slora-report --example render_demo -- DIR`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "reports/demo".into());
    let inputs = slora_report::demo::demo_inputs();
    let (report, summary) = slora_report::build_report(&inputs)?;
    slora_report::write_report(std::path::Path::new(&dir), &report, &[("summary.json", summary.to_json())])?;
    println!("{dir}/index.html");
    Ok(())
}
