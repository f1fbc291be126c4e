//! Writing a report folder atomically: everything goes to a temporary sibling folder first, which
//! then replaces the old report in one rename, so a reader never sees half a report.

use std::path::Path;

use crate::error::{ReportError, Result};
use crate::html::render_html;
use crate::markdown::render_markdown;
use crate::report::Report;

/// Files of a rendered report, paths relative to the report folder.
pub fn report_files(report: &Report, extra: &[(&str, String)]) -> Vec<(String, String)> {
    let mut files = vec![
        ("index.html".to_string(), render_html(report)),
        ("report.md".to_string(), render_markdown(report)),
    ];
    for f in report.figures() {
        files.push((format!("figures/{}.svg", f.id), f.svg.clone()));
    }
    files.extend(extra.iter().map(|(p, c)| (p.to_string(), c.clone())));
    files
}

/// Writes `files` as the whole contents of `dir` (replacing what was there), all or nothing
/// ([`slora_fsio::write_dir_atomic`]: a temporary folder, synced files, one rename).
pub fn write_dir_atomically(dir: &Path, files: &[(String, String)]) -> Result<()> {
    let bytes: Vec<(String, Vec<u8>)> = files.iter().map(|(p, c)| (p.clone(), c.clone().into_bytes())).collect();
    slora_fsio::write_dir_atomic(dir, &bytes).map_err(|e| ReportError::io(dir, e))
}

/// Renders `report` into `dir`: `index.html`, `report.md`, `figures/*.svg` and the `extra` files.
pub fn write_report(dir: &Path, report: &Report, extra: &[(&str, String)]) -> Result<()> {
    write_dir_atomically(dir, &report_files(report, extra))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A full disk while replacing a report leaves the old report whole (every file of it).
    #[test]
    fn full_disk_leaves_the_old_report() {
        let dir = std::env::temp_dir().join(format!("slora-report-fault-{}", std::process::id()));
        let out = dir.join("report");
        let files = |tag: &str| vec![("index.html".to_string(), tag.repeat(50)), ("figures/a.svg".to_string(), "<svg/>".repeat(50))];
        write_dir_atomically(&out, &files("v1")).unwrap();
        assert!(slora_fsio::fault::with_budget(100, || write_dir_atomically(&out, &files("v2"))).is_err());
        assert_eq!(std::fs::read_to_string(out.join("index.html")).unwrap(), "v1".repeat(50));
        assert!(out.join("figures/a.svg").is_file());
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1, "no temporary folder left");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
