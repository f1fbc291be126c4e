//! Range checks: each error names the key, the value and what is allowed.

use super::{BaselineMethod, Config, PartitionScheme};
use crate::error::PipelineError;

fn fail(key: &str, rule: &str, got: impl std::fmt::Display) -> Result<(), PipelineError> {
    Err(PipelineError::config(format!("{key} must be {rule} (got {got})")))
}

fn positive(key: &str, v: f64) -> Result<(), PipelineError> {
    if v > 0.0 && v.is_finite() {
        Ok(())
    } else {
        fail(key, "> 0", v)
    }
}

fn positive_lr(key: &str, v: super::LearningRate) -> Result<(), PipelineError> {
    match v {
        super::LearningRate::Value(x) => positive(key, x),
        super::LearningRate::Tuned => Ok(()),
    }
}

fn at_least(key: &str, v: usize, min: usize) -> Result<(), PipelineError> {
    if v >= min {
        Ok(())
    } else {
        fail(key, &format!(">= {min}"), v)
    }
}

fn in_unit(key: &str, v: f64, rule: &str, ok: bool) -> Result<(), PipelineError> {
    if ok && v.is_finite() {
        Ok(())
    } else {
        fail(key, rule, v)
    }
}

fn non_empty(key: &str, v: &str, what: &str) -> Result<(), PipelineError> {
    if v.trim().is_empty() {
        Err(PipelineError::config(format!("{key} is required: {what}")))
    } else {
        Ok(())
    }
}

impl Config {
    /// Checks every key's range. Pure: touches no file (missing files are reported by the stage that
    /// reads them).
    pub fn validate(&self) -> Result<(), PipelineError> {
        let r = &self.run;
        non_empty("run.name", &r.name, "the experiment name")?;
        if r.name.contains(['/', '\\']) || r.name.starts_with('.') {
            return fail("run.name", "a plain folder name (no `/`, not starting with `.`)", format!("{:?}", r.name));
        }
        at_least("run.threads", r.threads, 1)?;
        let mut seeds = r.seeds.clone();
        seeds.sort_unstable();
        seeds.dedup();
        if seeds.len() != r.seeds.len() {
            return fail("run.seeds", "a list without repeats", format!("{:?}", r.seeds));
        }

        let d = &self.data;
        non_empty("data.source", &d.source, "a .parquet/.jsonl/.jsonl.gz/.csv file or a hub dataset id")?;
        non_empty("data.text_column", &d.text_column, "the column holding the text")?;
        non_empty("data.label_column", &d.label_column, "the column holding the label")?;
        if !(0.0..1.0).contains(&d.test_fraction) {
            return fail("data.test_fraction", "in [0, 1) (0 = use the split column)", d.test_fraction);
        }
        if d.test_fraction > 0.0 && !d.test_source.is_empty() {
            return fail("data.test_fraction", "0 when data.test_source names the test rows", d.test_fraction);
        }
        if d.test_source.is_empty() && d.test_fraction == 0.0 {
            non_empty("data.split_column", &d.split_column, "it tells train from test when data.test_source is empty")?;
            if d.train_split == d.test_split {
                return fail("data.test_split", "different from data.train_split", format!("{:?}", d.test_split));
            }
        }
        at_least("data.max_len", d.max_len, 2)?;
        if d.max_len > 8192 {
            return fail("data.max_len", "<= 8192", d.max_len);
        }

        non_empty("model.source", &self.model.source, "a local Hugging Face-layout folder or a hub model id")?;
        non_empty("model.revision", &self.model.revision, "a branch, tag or commit")?;

        let p = &self.partition;
        at_least("partition.clients", p.clients, 1)?;
        positive("partition.alpha", p.alpha)?;
        at_least("partition.classes_per_client", p.classes_per_client, 1)?;
        in_unit("partition.validation_fraction", p.validation_fraction, "in [0, 1)", (0.0..1.0).contains(&p.validation_fraction))?;
        if p.scheme == PartitionScheme::Dirichlet && p.min_client_size.saturating_mul(p.clients) > 100_000_000 {
            return fail("partition.min_client_size", "reasonable (clients * min_client_size <= 1e8)", p.min_client_size);
        }

        if p.scheme == PartitionScheme::Natural {
            non_empty("partition.id_column", &p.id_column, "the column naming each row's writer (partition.scheme = \"natural\")")?;
        }

        let f = &self.federation;
        at_least("federation.clients_per_round", f.clients_per_round, 1)?;
        // Natural partitions learn their client count from the data: the partition stage checks it.
        if p.scheme != PartitionScheme::Natural && f.clients_per_round > p.clients {
            return fail(
                "federation.clients_per_round",
                &format!("<= partition.clients = {}", p.clients),
                f.clients_per_round,
            );
        }
        at_least("federation.local_epochs", f.local_epochs, 1)?;
        at_least("federation.batch_size", f.batch_size, 1)?;
        at_least("federation.eval_every", f.eval_every, 1)?;
        at_least("federation.full_test_last_k", f.full_test_last_k, 1)?;
        at_least("stage1.mask_batches", self.stage1.mask_batches, 1)?;

        let o = &self.optim;
        in_unit("optim.weight_decay", o.weight_decay, ">= 0", o.weight_decay >= 0.0)?;
        in_unit("optim.beta1", o.beta1, "in [0, 1)", (0.0..1.0).contains(&o.beta1))?;
        in_unit("optim.beta2", o.beta2, "in [0, 1)", (0.0..1.0).contains(&o.beta2))?;
        positive("optim.eps", o.eps)?;
        in_unit("optim.dropout", o.dropout, "< 1 (negative = the model's value)", o.dropout < 1.0)?;
        in_unit("optim.head_lr", o.head_lr, ">= 0 (0 = each method's own rate)", o.head_lr >= 0.0)?;

        for (key, list) in [("adapter.target_modules", &self.adapter.target_modules), ("adapter.modules_to_save", &self.adapter.modules_to_save)] {
            if list.iter().any(|m| m.trim().is_empty()) {
                return fail(key, "module names (or no key: the architecture's defaults)", "an empty name");
            }
        }

        let s1 = &self.stage1;
        at_least("stage1.rounds", s1.rounds, 1)?;
        in_unit("stage1.density", s1.density, "in (0, 1]", s1.density > 0.0 && s1.density <= 1.0)?;
        positive_lr("stage1.lr", s1.lr)?;

        let l = &self.lora;
        at_least("lora.r", l.r, 1)?;
        positive("lora.lora_alpha", l.lora_alpha)?;
        in_unit("lora.lora_dropout", l.lora_dropout, "in [0, 1)", (0.0..1.0).contains(&l.lora_dropout))?;

        let s2 = &self.stage2;
        at_least("stage2.rounds", s2.rounds, 1)?;
        positive_lr("stage2.lr", s2.lr)?;

        let b = &self.baselines;
        positive_lr("baselines.fft_lr", b.fft_lr)?;
        positive_lr("baselines.lora_lr", b.lora_lr)?;
        positive_lr("baselines.sft_lr", b.sft_lr)?;
        positive_lr("baselines.ffa_lora_lr", b.ffa_lora_lr)?;
        positive_lr("baselines.fedex_lora_lr", b.fedex_lora_lr)?;
        positive_lr("baselines.lora_a2_lr", b.lora_a2_lr)?;
        positive_lr("baselines.flexlora_lr", b.flexlora_lr)?;
        positive_lr("baselines.fedsa_lora_lr", b.fedsa_lora_lr)?;
        if self.lora.a2_rank_budget > self.lora.r {
            return fail("lora.a2_rank_budget", &format!("at most lora.r = {}", self.lora.r), self.lora.a2_rank_budget);
        }
        let bound = self.federation.max_update_norm;
        if !(bound >= 0.0 && bound.is_finite()) {
            return fail("federation.max_update_norm", "a number >= 0 (0: no bound)", bound);
        }
        self.validate_privacy()?;
        let ranks = &self.federation.client_ranks;
        if !ranks.is_empty() {
            if ranks.contains(&0) {
                return fail("federation.client_ranks", "a list of ranks >= 1", format!("{ranks:?}"));
            }
            if ranks.iter().max() != Some(&self.lora.r) {
                return fail("federation.client_ranks", &format!("a list whose largest rank is lora.r = {}, the global adapter's", self.lora.r), format!("{ranks:?}"));
            }
            if let Some(m) = b.methods.iter().find(|m| matches!(m, BaselineMethod::FfaLora | BaselineMethod::LoraA2 | BaselineMethod::FedsaLora)) {
                return fail("baselines.methods", &format!("free of {m} while federation.client_ranks is set ({m} trains one rank on every client)"), format!("{:?}", b.methods.iter().map(|m| m.to_string()).collect::<Vec<_>>()));
            }
        }
        let ratio = self.optim.lora_b_lr_ratio;
        if !(ratio > 0.0 && ratio.is_finite()) {
            return fail("optim.lora_b_lr_ratio", "a number > 0", ratio);
        }
        let mut seen = b.methods.clone();
        seen.sort();
        seen.dedup();
        if seen.len() != b.methods.len() {
            return fail("baselines.methods", "a list without repeats", format!("{:?}", b.methods));
        }

        let t = &self.tune;
        for (key, grid) in [("tune.fft", &t.fft), ("tune.lora", &t.lora), ("tune.sft", &t.sft), ("tune.ffa-lora", &t.ffa_lora), ("tune.fedex-lora", &t.fedex_lora), ("tune.lora-a2", &t.lora_a2), ("tune.flexlora", &t.flexlora), ("tune.fedsa-lora", &t.fedsa_lora)] {
            if let Some(bad) = grid.iter().find(|v| !(**v > 0.0 && v.is_finite())) {
                return fail(key, "a list of rates > 0", bad);
            }
        }
        for (key, method) in self.tuned_keys() {
            if t.grid(method).is_empty() {
                return fail(key, &format!("a number while tune.{method} is empty (\"tuned\" needs a grid)"), "\"tuned\"");
            }
        }
        at_least("tune.last_k", t.last_k, 1)?;

        let rp = &self.report;
        if rp.dir.as_os_str().is_empty() {
            return fail("report.dir", "a folder", "\"\"");
        }
        at_least("report.last_k", rp.last_k, 1)?;
        in_unit("report.target_fraction", rp.target_fraction, "in (0, 1]", rp.target_fraction > 0.0 && rp.target_fraction <= 1.0)?;
        in_unit("report.target_accuracy", rp.target_accuracy, "in [0, 1] (0 = use target_fraction)", (0.0..=1.0).contains(&rp.target_accuracy))?;
        Ok(())
    }
}
