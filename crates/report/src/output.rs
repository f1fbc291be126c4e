//! Writing a report folder atomically: everything goes to a temporary sibling folder first, which
//! then replaces the old report in one rename, so a reader never sees half a report.

use std::fs;
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

/// Writes `files` as the whole contents of `dir` (replacing what was there).
pub fn write_dir_atomically(dir: &Path, files: &[(String, String)]) -> Result<()> {
    let name = dir
        .file_name()
        .ok_or_else(|| ReportError::Invalid(format!("report folder {} has no name", dir.display())))?
        .to_string_lossy()
        .to_string();
    let parent = dir.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| ReportError::io(parent, e))?;
    let pid = std::process::id();
    let tmp = parent.join(format!(".{name}.tmp-{pid}"));
    let old = parent.join(format!(".{name}.old-{pid}"));
    for stale in [&tmp, &old] {
        if stale.exists() {
            fs::remove_dir_all(stale).map_err(|e| ReportError::io(stale, e))?;
        }
    }
    let result = (|| {
        for (rel, contents) in files {
            let path = tmp.join(rel);
            if let Some(p) = path.parent() {
                fs::create_dir_all(p).map_err(|e| ReportError::io(p, e))?;
            }
            fs::write(&path, contents).map_err(|e| ReportError::io(&path, e))?;
        }
        if dir.exists() {
            fs::rename(dir, &old).map_err(|e| ReportError::io(dir, e))?;
        }
        fs::rename(&tmp, dir).map_err(|e| ReportError::io(dir, e))?;
        if old.exists() {
            fs::remove_dir_all(&old).map_err(|e| ReportError::io(&old, e))?;
        }
        Ok(())
    })();
    if result.is_err() && tmp.exists() {
        let _ = fs::remove_dir_all(&tmp);
    }
    result
}

/// Renders `report` into `dir`: `index.html`, `report.md`, `figures/*.svg` and the `extra` files.
pub fn write_report(dir: &Path, report: &Report, extra: &[(&str, String)]) -> Result<()> {
    write_dir_atomically(dir, &report_files(report, extra))
}
