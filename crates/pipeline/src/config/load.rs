//! Reading `pipeline.toml`, checking keys and types against the defaults, `--set` overrides and
//! path resolution.
//!
//! The schema is the serialised [`Config::default`]: a key the defaults lack is unknown, and a value
//! must have the default's TOML type (an integer is accepted where a float is expected). This gives
//! one-line errors that name the full key, which serde's own messages do not.

use super::Config;
use crate::error::PipelineError;
use std::path::{Path, PathBuf};
use toml::{Table, Value};

/// String-valued keys whose value must be one of a fixed set (lists: every element).
const ENUM_KEYS: &[(&str, &[&str])] = &[
    ("partition.scheme", &["iid", "dirichlet", "dirichlet-client", "pathological", "natural"]),
    ("stage1.mask", &["random", "federated-importance"]),
    ("optim.schedule", &["constant", "linear"]),
    ("optim.precision", &["fp32", "bf16"]),
    ("decompose.init", &["svd", "svd-b", "random"]),
    ("baselines.methods", &["fft", "lora", "sft", "ffa-lora", "fedex-lora", "lora-a2", "flexlora", "fedsa-lora"]),
];

/// Learning-rate keys that also take the string `"tuned"`.
const TUNABLE_KEYS: &[&str] =
    &["stage1.lr", "stage2.lr", "baselines.fft_lr", "baselines.lora_lr", "baselines.sft_lr", "baselines.ffa_lora_lr", "baselines.fedex_lora_lr", "baselines.lora_a2_lr", "baselines.flexlora_lr", "baselines.fedsa_lora_lr"];

fn is_tuned(key: &str, value: &Value) -> bool {
    TUNABLE_KEYS.contains(&key) && value.as_str() == Some("tuned")
}

/// One `--set KEY=VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigOverride {
    /// `section.key`.
    pub key: String,
    /// The raw value, parsed later with the key's type.
    pub value: String,
}

/// Splits `KEY=VALUE` (the value may contain `=`).
pub fn parse_set(arg: &str) -> Result<ConfigOverride, PipelineError> {
    match arg.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok(ConfigOverride { key: key.trim().to_string(), value: value.to_string() })
        }
        _ => Err(PipelineError::config(format!("--set {arg}: expected KEY=VALUE, e.g. partition.alpha=0.5"))),
    }
}

impl Config {
    /// Parses a TOML document (no file, no path resolution); `origin` names it in errors.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Config, PipelineError> {
        let mut table = parse_table(text, Path::new(origin))?;
        check_table(&schema(), &mut table, "").map_err(|m| PipelineError::config(format!("{origin}: {m}")))?;
        into_config(table)
    }

    /// Reads the config file (`path`, else `./pipeline.toml` when present, else the defaults), applies
    /// `overrides`, and resolves relative paths. Does not validate: call [`Config::validate`].
    pub fn load(path: Option<&Path>, overrides: &[ConfigOverride]) -> Result<Config, PipelineError> {
        let cwd = std::env::current_dir().map_err(|e| PipelineError::io(".", e))?;
        let file = match path {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from("pipeline.toml")).filter(|p| p.is_file()),
        };
        let (mut table, base_dir, config_path) = match &file {
            Some(file) => {
                let text = std::fs::read_to_string(file).map_err(|e| PipelineError::ConfigFile {
                    path: file.clone(),
                    message: e.to_string(),
                })?;
                let mut table = parse_table(&text, file)?;
                check_table(&schema(), &mut table, "")
                    .map_err(|m| PipelineError::config(format!("{}: {m}", file.display())))?;
                let abs = absolute(&cwd, file);
                let base = abs.parent().map(Path::to_path_buf).unwrap_or_else(|| cwd.clone());
                (table, base, Some(abs))
            }
            None => (Table::new(), cwd.clone(), None),
        };
        let schema = schema();
        let mut set_keys = Vec::new();
        for ov in overrides {
            apply_override(&schema, &mut table, ov)?;
            set_keys.push(ov.key.clone());
        }
        let mut cfg = into_config(table)?;
        cfg.base_dir = base_dir.clone();
        cfg.config_path = config_path;
        let base_for = |key: &str| if set_keys.iter().any(|k| k == key) { cwd.clone() } else { base_dir.clone() };
        cfg.data.source = resolve_source(&base_for("data.source"), &cfg.data.source);
        cfg.data.test_source = resolve_source(&base_for("data.test_source"), &cfg.data.test_source);
        cfg.model.source = resolve_source(&base_for("model.source"), &cfg.model.source);
        cfg.report.dir = absolute(&base_for("report.dir"), &cfg.report.dir);
        Ok(cfg)
    }

    /// The config as a TOML table (paths as resolved).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).unwrap_or_default()
    }
}

fn absolute(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

/// A local path relative to `base` becomes absolute; a hub id (that is not an existing path under
/// `base`) stays as is; empty stays empty.
fn resolve_source(base: &Path, s: &str) -> String {
    if s.is_empty() {
        return String::new();
    }
    let joined = absolute(base, Path::new(s));
    if Path::new(s).is_absolute() || joined.exists() || !slora_hub::is_hub_id(s) {
        joined.to_string_lossy().into_owned()
    } else {
        s.to_string()
    }
}

/// Every config key, `section.key` (the keys `--set` and a config file accept), sorted.
pub fn known_keys() -> Vec<String> {
    let mut keys: Vec<String> = schema()
        .iter()
        .filter_map(|(section, v)| v.as_table().map(|t| t.keys().map(|k| format!("{section}.{k}")).collect::<Vec<_>>()))
        .flatten()
        .collect();
    keys.sort();
    keys
}

fn schema() -> Table {
    let Ok(Value::Table(mut t)) = Value::try_from(Config::default()) else {
        unreachable!("the default config serialises to a table")
    };
    // Lists empty by default (the architecture's choice): their element type is text.
    if let Some(Value::Table(adapter)) = t.get_mut("adapter") {
        for key in ["target_modules", "modules_to_save"] {
            adapter.insert(key.to_string(), Value::Array(vec![Value::String(String::new())]));
        }
    }
    // Sections the default leaves out of its serialisation (off: out of every key).
    if let Ok(Value::Table(privacy)) = Value::try_from(super::PrivacyConfig::default()) {
        t.insert("privacy".to_string(), Value::Table(privacy));
    }
    // Keys the default leaves out of its serialisation (so that they stay out of cache keys until
    // set), with a value of their type.
    let mut add = |section: &str, key: &str, value: Value| {
        if let Some(Value::Table(s)) = t.get_mut(section) {
            s.entry(key.to_string()).or_insert(value);
        }
    };
    add("stage2", "freeze_a", Value::Boolean(false));
    add("optim", "precision", Value::String("fp32".into()));
    // Deprecated spellings of `[lora]` keys, still read (Config::migrate_deprecated).
    add("decompose", "rank", Value::Integer(8));
    add("decompose", "lora_alpha", Value::Float(16.0));
    add("stage2", "lora_dropout", Value::Float(0.0));
    add("partition", "id_column", Value::String(String::new()));
    add("data", "test_hub_file", Value::String(String::new()));
    add("stage1", "mask", Value::String("random".into()));
    add("stage1", "mask_batches", Value::Integer(4));
    add("federation", "full_test_last_k", Value::Integer(1));
    add("partition", "max_clients", Value::Integer(0));
    add("baselines", "ffa_lora_lr", Value::Float(1e-3));
    add("tune", "ffa-lora", Value::Array(vec![Value::Float(1e-3)]));
    add("baselines", "fedex_lora_lr", Value::Float(1e-3));
    add("adapter", "freeze_head", Value::Boolean(false));
    add("baselines", "lora_a2_lr", Value::Float(1e-3));
    add("tune", "lora-a2", Value::Array(vec![Value::Float(1e-3)]));
    add("lora", "a2_rank_budget", Value::Integer(0));
    add("baselines", "flexlora_lr", Value::Float(1e-3));
    add("tune", "flexlora", Value::Array(vec![Value::Float(1e-3)]));
    add("optim", "lora_b_lr_ratio", Value::Float(1.0));
    add("tune", "fedex-lora", Value::Array(vec![Value::Float(1e-3)]));
    add("federation", "client_ranks", Value::Array(Vec::new()));
    add("federation", "max_update_norm", Value::Float(0.0));
    add("federation", "record_uploads", Value::Integer(0));
    add("baselines", "fedsa_lora_lr", Value::Float(1e-3));
    add("tune", "fedsa-lora", Value::Array(vec![Value::Float(1e-3)]));
    t
}

fn parse_table(text: &str, path: &Path) -> Result<Table, PipelineError> {
    text.parse::<Table>().map_err(|e| {
        let line = e.span().map(|s| text[..s.start.min(text.len())].lines().count().max(1));
        let at = line.map(|l| format!("line {l}: ")).unwrap_or_default();
        PipelineError::ConfigFile { path: path.to_path_buf(), message: format!("{at}{}", e.message().trim()) }
    })
}

fn into_config(table: Table) -> Result<Config, PipelineError> {
    let mut cfg = Value::Table(table).try_into::<Config>().map_err(|e| PipelineError::config(e.message().trim().to_string()))?;
    cfg.migrate_deprecated()?;
    Ok(cfg)
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::String(_) => "a string",
        Value::Integer(_) => "a non-negative integer",
        Value::Float(_) => "a number",
        Value::Boolean(_) => "true or false",
        Value::Datetime(_) => "a date",
        Value::Array(_) => "a list",
        Value::Table(_) => "a table",
    }
}

/// Checks `given` against `schema` recursively, turning integers into floats where floats are
/// expected. Returns the message of the first problem.
fn check_table(schema: &Table, given: &mut Table, prefix: &str) -> Result<(), String> {
    for (key, value) in given.iter_mut() {
        let full = if prefix.is_empty() { key.clone() } else { format!("{prefix}.{key}") };
        let Some(expected) = schema.get(key) else {
            return Err(format!("unknown config key `{full}`"));
        };
        check_value(expected, value, &full)?;
    }
    Ok(())
}

fn check_value(expected: &Value, value: &mut Value, key: &str) -> Result<(), String> {
    if is_tuned(key, value) {
        return Ok(());
    }
    if let (Value::Float(_), Value::String(s)) = (expected, &*value) {
        if TUNABLE_KEYS.contains(&key) {
            return Err(format!("{key} must be a number or \"tuned\" (got {s:?})"));
        }
    }
    match (expected, &*value) {
        (Value::Table(s), Value::Table(_)) => {
            let Value::Table(t) = value else { unreachable!() };
            return check_table(s, t, key);
        }
        (Value::Float(_), Value::Integer(i)) => *value = Value::Float(*i as f64),
        (Value::Integer(_), Value::Integer(i)) if *i < 0 => {
            return Err(format!("{key} must be a non-negative integer (got {i})"));
        }
        (Value::Array(s), Value::Array(items)) => {
            if let Some(elem) = s.first() {
                let mut items = items.clone();
                for (i, item) in items.iter_mut().enumerate() {
                    check_value(elem, item, &format!("{key}[{i}]")).map_err(|m| m.replace(&format!("{key}[{i}]"), key))?;
                }
                *value = Value::Array(items);
            }
        }
        (e, v) if std::mem::discriminant(e) != std::mem::discriminant(v) => {
            return Err(format!("{key} must be {} (got {v})", type_name(e)));
        }
        _ => {}
    }
    if let Some((_, allowed)) = ENUM_KEYS.iter().find(|(k, _)| *k == key) {
        let values: Vec<&Value> = match &*value {
            Value::Array(items) => items.iter().collect(),
            v => vec![v],
        };
        for v in values {
            if !v.as_str().is_some_and(|s| allowed.contains(&s)) {
                return Err(format!("{key} must be one of {} (got {v})", allowed.join(", ")));
            }
        }
    }
    Ok(())
}

fn apply_override(schema: &Table, table: &mut Table, ov: &ConfigOverride) -> Result<(), PipelineError> {
    let err = |m: String| PipelineError::config(format!("--set {}={}: {m}", ov.key, ov.value));
    let Some((section, key)) = ov.key.split_once('.') else {
        return Err(err(format!("unknown config key `{}` (keys look like section.key)", ov.key)));
    };
    let expected = match schema.get(section) {
        Some(Value::Table(s)) => s.get(key),
        _ => None,
    };
    let Some(expected) = expected else {
        return Err(err(format!("unknown config key `{}`", ov.key)));
    };
    let mut value = if TUNABLE_KEYS.contains(&ov.key.as_str()) && unquote(ov.value.trim()) == "tuned" {
        Value::String("tuned".into())
    } else {
        parse_typed(expected, &ov.value).map_err(|m| {
            if TUNABLE_KEYS.contains(&ov.key.as_str()) {
                err(format!("{} must be a number or \"tuned\" (got {:?})", ov.key, ov.value.trim()))
            } else {
                err(format!("{} must be {m}", ov.key))
            }
        })?
    };
    check_value(expected, &mut value, &ov.key).map_err(err)?;
    let entry = table.entry(section.to_string()).or_insert_with(|| Value::Table(Table::new()));
    match entry {
        Value::Table(t) => {
            t.insert(key.to_string(), value);
            Ok(())
        }
        _ => Err(err(format!("`{section}` in the config file is not a table"))),
    }
}

/// Parses a `--set` value with the type of the key's default.
fn parse_typed(expected: &Value, raw: &str) -> Result<Value, String> {
    let s = raw.trim();
    match expected {
        Value::String(_) => Ok(Value::String(unquote(s).to_string())),
        Value::Integer(_) => s.parse::<i64>().map(Value::Integer).map_err(|_| format!("an integer (got {s:?})")),
        Value::Float(_) => s
            .parse::<f64>()
            .ok()
            .filter(|f| f.is_finite())
            .map(Value::Float)
            .ok_or_else(|| format!("a finite number (got {s:?})")),
        Value::Boolean(_) => s.parse::<bool>().map(Value::Boolean).map_err(|_| format!("true or false (got {s:?})")),
        Value::Array(items) => {
            if s.starts_with('[') {
                let doc = format!("v = {s}");
                let t: Table = doc.parse().map_err(|_| format!("a TOML list like [\"a\", \"b\"] (got {s:?})"))?;
                Ok(t["v"].clone())
            } else {
                let parts = s.split(',').map(str::trim).filter(|p| !p.is_empty());
                match items.first() {
                    Some(elem) => parts.map(|p| parse_typed(elem, p)).collect::<Result<Vec<_>, _>>().map(Value::Array),
                    // An empty default list (run.seeds): integers, else numbers, else strings.
                    None => Ok(Value::Array(
                        parts
                            .map(|p| {
                                p.parse::<i64>()
                                    .map(Value::Integer)
                                    .or_else(|_| p.parse::<f64>().map(Value::Float))
                                    .unwrap_or_else(|_| Value::String(unquote(p).to_string()))
                            })
                            .collect(),
                    )),
                }
            }
        }
        other => Err(format!("{} (not settable with --set)", type_name(other))),
    }
}

fn unquote(s: &str) -> &str {
    s.strip_prefix('"').and_then(|t| t.strip_suffix('"')).unwrap_or(s)
}
