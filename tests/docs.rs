//! The front door and the reference pages (README.md, docs/*.md) are checked as code is:
//! - every relative link (and image) resolves to a file of the repository, and an anchor into a
//!   Markdown file names one of its headings (GitHub's slugs);
//! - every `pipeline …` command they show (in a code block, or as inline code; also as `cargo run --
//!   …` and `target/debug/pipeline …`) parses with the CLI's own parser, and the keys of its `--set`
//!   exist;
//! - every config key they name as inline code (`section.key`) exists.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::Parser;
use slora_pipeline::cli::Cli;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// README.md and every page under docs/.
fn pages() -> Vec<PathBuf> {
    let mut pages = vec![root().join("README.md")];
    let mut docs: Vec<PathBuf> = std::fs::read_dir(root().join("docs"))
        .expect("docs/")
        .map(|e| e.expect("a docs entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    docs.sort();
    assert!(docs.len() >= 8, "docs/ holds one page per concern: {docs:?}");
    pages.extend(docs);
    pages
}

/// The text outside fenced code blocks, and the fenced blocks' lines.
fn split_fences(text: &str) -> (String, Vec<String>) {
    let (mut prose, mut code, mut fenced) = (String::new(), Vec::new(), false);
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if fenced {
            code.push(line.to_string());
        } else {
            prose.push_str(line);
            prose.push('\n');
        }
    }
    (prose, code)
}

/// Inline code spans of `prose`.
fn inline_code(prose: &str) -> Vec<String> {
    prose.split('`').skip(1).step_by(2).map(str::to_string).collect()
}

/// GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens.
fn slug(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

fn anchors(text: &str) -> BTreeSet<String> {
    let (prose, _) = split_fences(text);
    prose.lines().filter(|l| l.starts_with('#')).map(|l| slug(l.trim_start_matches('#'))).collect()
}

/// The targets of `[text](target)` and `![alt](target)` in `prose`.
fn link_targets(prose: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = prose;
    while let Some(i) = rest.find("](") {
        let after = &rest[i + 2..];
        let Some(end) = after.find(')') else { break };
        out.push(after[..end].trim().to_string());
        rest = &after[end..];
    }
    out
}

#[test]
fn every_relative_link_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("a page");
        let (prose, _) = split_fences(&text);
        for target in link_targets(&prose) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let file = if path.is_empty() { page.clone() } else { page.parent().expect("a folder").join(path) };
            if !file.exists() {
                broken.push(format!("{}: {target}: no such file", page.display()));
                continue;
            }
            if !anchor.is_empty() && file.extension().is_some_and(|e| e == "md") {
                let headings = anchors(&std::fs::read_to_string(&file).expect("a linked page"));
                if !headings.contains(anchor) {
                    broken.push(format!("{}: {target}: no heading #{anchor} in {}", page.display(), file.display()));
                }
            }
        }
    }
    assert!(checked > 30, "only {checked} links found");
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

/// A `pipeline …` command line in `line`, as arguments after the program name: the part before a
/// comment, a pipe or a redirection.
fn pipeline_args(line: &str) -> Option<Vec<String>> {
    let line = line.trim().trim_start_matches("$ ");
    let rest = ["pipeline ", "target/debug/pipeline ", "cargo run -- "]
        .iter()
        .find_map(|p| line.strip_prefix(p))?;
    // Elided or templated commands (`pipeline … baselines`, `pipeline [--config FILE] …`) are prose.
    if rest.contains('…') || rest.starts_with('[') || rest.contains("...") {
        return None;
    }
    let end = [" #", " |", " >", " &&", " ;", " 2>"].iter().filter_map(|s| rest.find(s)).min().unwrap_or(rest.len());
    shlex::split(&rest[..end])
}

fn commands(page: &Path) -> Vec<(String, Vec<String>)> {
    let text = std::fs::read_to_string(page).expect("a page");
    let (prose, code) = split_fences(&text);
    // Continued lines (`\` at the end) are one command.
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in code {
        if let Some(head) = line.trim_end().strip_suffix('\\') {
            current.push_str(head);
            current.push(' ');
        } else {
            current.push_str(&line);
            joined.push(std::mem::take(&mut current));
        }
    }
    joined.extend(inline_code(&prose));
    joined.into_iter().filter_map(|l| pipeline_args(&l).map(|a| (l, a))).collect()
}

#[test]
fn every_pipeline_command_parses_and_sets_known_keys() {
    let known: BTreeSet<String> = slora_pipeline::config::known_keys().into_iter().collect();
    let mut bad = Vec::new();
    let mut parsed = 0;
    for page in pages() {
        for (line, args) in commands(&page) {
            let argv = std::iter::once("pipeline".to_string()).chain(args.iter().cloned());
            match Cli::try_parse_from(argv) {
                Ok(cli) => {
                    parsed += 1;
                    for set in &cli.set {
                        if !known.contains(&set.key) {
                            bad.push(format!("{}: `{line}`: --set {}: no such config key", page.display(), set.key));
                        }
                    }
                }
                // `--help` and `--version` parse as clap's "errors" that print and exit 0.
                Err(e) if matches!(e.kind(), clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion) => parsed += 1,
                Err(e) => bad.push(format!("{}: `{line}`: {}", page.display(), e.to_string().lines().next().unwrap_or_default())),
            }
        }
    }
    assert!(parsed > 20, "only {parsed} commands found");
    assert!(bad.is_empty(), "commands that do not parse:\n{}", bad.join("\n"));
}

#[test]
fn every_config_key_named_exists() {
    let known: BTreeSet<String> = slora_pipeline::config::known_keys().into_iter().collect();
    let sections: BTreeSet<&str> = known.iter().filter_map(|k| k.split_once('.').map(|(s, _)| s)).collect();
    // A file name that starts like a section (`report.md`) is not a key.
    let files = ["md", "json", "toml", "html", "parquet", "py", "rs", "png", "svg", "jsonl", "lock", "safetensors"];
    let mut unknown = Vec::new();
    let mut named = 0;
    for page in pages() {
        let text = std::fs::read_to_string(&page).expect("a page");
        let (prose, _) = split_fences(&text);
        for span in inline_code(&prose) {
            // `key = value` and `key=value` name the key before the sign.
            let token = span.split(['=', ' ']).next().unwrap_or_default().trim();
            let Some((section, key)) = token.split_once('.') else { continue };
            if !sections.contains(section) || files.contains(&key) || key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
                continue;
            }
            named += 1;
            if !known.contains(token) {
                unknown.push(format!("{}: `{span}`", page.display()));
            }
        }
    }
    assert!(named > 40, "only {named} config keys named");
    assert!(unknown.is_empty(), "config keys that do not exist:\n{}", unknown.join("\n"));
}
