//! The self-contained HTML page: inline CSS, inline SVG figures, no scripts, nothing fetched.

use std::fmt::Write as _;

use crate::report::{Block, CaptionedTable, Report};
use crate::tables::{Align, TextTable};

/// Escapes text for HTML element content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root { --fg: #1b1b1b; --muted: #5a5a5a; --rule: #d9d9d9; --accent: #d55e00; }
* { box-sizing: border-box; }
body { margin: 0; color: var(--fg); background: #fff;
  font: 16px/1.55 "Source Serif Pro", "Georgia", "Times New Roman", serif; }
main { max-width: 1080px; margin: 0 auto; padding: 32px 28px 64px; }
h1 { font: 600 28px/1.25 system-ui, sans-serif; margin: 0 0 6px; }
h2 { font: 600 21px/1.3 system-ui, sans-serif; margin: 40px 0 12px; padding-bottom: 4px; border-bottom: 1px solid var(--rule); }
nav { font: 14px system-ui, sans-serif; margin: 8px 0 18px; }
nav a { color: var(--muted); margin-right: 14px; text-decoration: none; }
nav a:hover { color: var(--accent); }
dl.setup { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; font: 14px system-ui, sans-serif; margin: 12px 0 0; }
dl.setup dt { color: var(--muted); }
dl.setup dd { margin: 0; }
figure { margin: 22px 0; }
figure svg { display: block; width: 100%; max-width: 860px; height: auto; margin: 0 auto; }
figcaption, .caption { font-size: 14px; color: var(--muted); margin-top: 6px; }
table { border-collapse: collapse; font: 13.5px/1.4 system-ui, sans-serif; margin: 8px 0; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--rule); vertical-align: top; }
thead th { border-bottom: 2px solid #888; text-align: left; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
ul { padding-left: 22px; } li { margin: 3px 0; }
.table-wrap { overflow-x: auto; margin: 18px 0; }
details { margin: 10px 0; font: 14px system-ui, sans-serif; }
pre { background: #f6f6f6; padding: 12px 14px; overflow-x: auto; font-size: 12.5px; line-height: 1.4; border: 1px solid var(--rule); }
code { font-family: "SFMono-Regular", Menlo, Consolas, monospace; }
"#;

fn table_html(out: &mut String, t: &TextTable) {
    out.push_str("<table>\n<thead><tr>");
    for (i, h) in t.headers.iter().enumerate() {
        let class = if t.align.get(i) == Some(&Align::Right) { " class=\"num\"" } else { "" };
        let _ = write!(out, "<th{class}>{}</th>", escape(h));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in &t.rows {
        out.push_str("<tr>");
        for (i, cell) in row.iter().enumerate() {
            let class = if t.align.get(i) == Some(&Align::Right) { " class=\"num\"" } else { "" };
            let _ = write!(out, "<td{class}>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

fn captioned_table_html(out: &mut String, t: &CaptionedTable, number: usize) {
    let _ = writeln!(out, "<div class=\"table-wrap\" id=\"{}\">", escape(&t.id));
    let _ = writeln!(
        out,
        "<p class=\"caption\"><b>Table {number}.</b> <b>{}.</b> {}</p>",
        escape(&t.title),
        escape(&t.caption)
    );
    table_html(out, &t.table);
    out.push_str("</div>\n");
}

/// Strips the XML prolog plotters may emit so the SVG can sit inline in HTML.
fn inline_svg(svg: &str) -> &str {
    match svg.find("<svg") {
        Some(i) => svg[i..].trim_end(),
        None => svg.trim(),
    }
}

/// Renders the whole page.
pub fn render_html(report: &Report) -> String {
    let mut out = String::with_capacity(256 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n<title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n",
        escape(&report.title)
    );
    let _ = writeln!(out, "<h1>{}</h1>", escape(&report.title));
    if !report.setup.is_empty() {
        out.push_str("<dl class=\"setup\">\n");
        for (k, v) in &report.setup {
            let _ = writeln!(out, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(v));
        }
        out.push_str("</dl>\n");
    }
    out.push_str("<nav>");
    for s in &report.sections {
        let _ = write!(out, "<a href=\"#{}\">{}</a>", escape(&s.id), escape(&s.heading));
    }
    out.push_str("</nav>\n");
    let (mut fig_no, mut table_no) = (0, 0);
    for s in &report.sections {
        let _ = writeln!(out, "<section id=\"{}\">\n<h2>{}</h2>", escape(&s.id), escape(&s.heading));
        for b in &s.blocks {
            match b {
                Block::Paragraph(p) => {
                    let _ = writeln!(out, "<p>{}</p>", escape(p));
                }
                Block::List(items) => {
                    out.push_str("<ul>\n");
                    for item in items {
                        let _ = writeln!(out, "<li>{}</li>", escape(item));
                    }
                    out.push_str("</ul>\n");
                }
                Block::Figure(f) => {
                    fig_no += 1;
                    let _ = writeln!(
                        out,
                        "<figure class=\"plot\" id=\"fig-{id}\" data-plot=\"{id}\">\n{svg}\n<figcaption><b>Figure {fig_no}.</b> <b>{title}.</b> {caption}</figcaption>\n</figure>",
                        id = escape(&f.id),
                        svg = inline_svg(&f.svg),
                        title = escape(&f.title),
                        caption = escape(&f.caption)
                    );
                }
                Block::Table(t) => {
                    table_no += 1;
                    captioned_table_html(&mut out, t, table_no);
                }
                Block::Code { text, .. } => {
                    let _ = writeln!(out, "<pre><code>{}</code></pre>", escape(text));
                }
                Block::Details { summary, table } => {
                    let _ = writeln!(out, "<details><summary>{}</summary>", escape(summary));
                    table_html(&mut out, table);
                    out.push_str("</details>\n");
                }
            }
        }
        out.push_str("</section>\n");
    }
    out.push_str("</main>\n</body>\n</html>\n");
    out
}
