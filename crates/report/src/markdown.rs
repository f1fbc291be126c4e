//! `report.md`: the same report as Markdown, figures referenced as `figures/<id>.svg`.

use std::fmt::Write as _;

use crate::report::{Block, Report};
use crate::tables::{Align, TextTable};

fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// A GitHub-flavoured Markdown table.
pub fn table_markdown(t: &TextTable) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "| {} |", t.headers.iter().map(|h| cell(h)).collect::<Vec<_>>().join(" | "));
    let rule: Vec<&str> = (0..t.headers.len())
        .map(|i| if t.align.get(i) == Some(&Align::Right) { "---:" } else { "---" })
        .collect();
    let _ = writeln!(out, "| {} |", rule.join(" | "));
    for row in &t.rows {
        let _ = writeln!(out, "| {} |", row.iter().map(|c| cell(c)).collect::<Vec<_>>().join(" | "));
    }
    out
}

/// Renders the whole report.
pub fn render_markdown(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# {}\n", report.title);
    for (k, v) in &report.setup {
        let _ = writeln!(out, "- **{k}:** {v}");
    }
    if !report.setup.is_empty() {
        out.push('\n');
    }
    let (mut fig_no, mut table_no) = (0, 0);
    for s in &report.sections {
        let _ = writeln!(out, "## {}\n", s.heading);
        for b in &s.blocks {
            match b {
                Block::Paragraph(p) => {
                    let _ = writeln!(out, "{p}\n");
                }
                Block::List(items) => {
                    for item in items {
                        let _ = writeln!(out, "- {item}");
                    }
                    out.push('\n');
                }
                Block::Figure(f) => {
                    fig_no += 1;
                    let _ = writeln!(out, "![{}](figures/{}.svg)\n", f.title, f.id);
                    let _ = writeln!(out, "*Figure {fig_no}. {}.* {}\n", f.title, f.caption);
                }
                Block::Table(t) => {
                    table_no += 1;
                    let _ = writeln!(out, "*Table {table_no}. {}.* {}\n", t.title, t.caption);
                    let _ = writeln!(out, "{}", table_markdown(&t.table));
                }
                Block::Code { language, text } => {
                    let _ = writeln!(out, "```{language}\n{}\n```\n", text.trim_end());
                }
                Block::Details { summary, table } => {
                    let _ = writeln!(out, "<details><summary>{summary}</summary>\n\n{}\n</details>\n", table_markdown(table));
                }
            }
        }
    }
    out
}
