//! The transformers `save_pretrained` tensor names of each architecture, with their shapes.
//!
//! One place decides names: weight loading validates against it and the encoders build from it.

use crate::config::{EncoderConfig, ModelType};

/// Module path (weight name without `.weight`/`.bias`) of BERT-layout layer `i`'s sub-module `sub`
/// under `prefix` (`bert`, or `roberta`, whose layers are BERT's under another name).
pub(crate) fn bert_layer(prefix: &str, i: usize, sub: &str) -> String {
    format!("{prefix}.encoder.layer.{i}.{sub}")
}

/// Module path of DistilBERT layer `i`'s sub-module `sub`.
pub(crate) fn distilbert_layer(i: usize, sub: &str) -> String {
    format!("distilbert.transformer.layer.{i}.{sub}")
}

/// Module path of ALBERT group `g`, inner layer `j`, sub-module `sub`.
pub(crate) fn albert_layer(g: usize, j: usize, sub: &str) -> String {
    format!("albert.encoder.albert_layer_groups.{g}.albert_layers.{j}.{sub}")
}

/// The head's module paths, in the order new ones are initialised: the dense layer before the
/// classifier (`bert.pooler.dense`, `pre_classifier`, `albert.pooler`, RoBERTa's
/// `classifier.dense`), then the classifier (`classifier`; RoBERTa's `classifier.out_proj`).
pub fn head_modules(ty: ModelType) -> [&'static str; 2] {
    match ty {
        ModelType::Bert => ["bert.pooler.dense", "classifier"],
        ModelType::DistilBert => ["pre_classifier", "classifier"],
        ModelType::Albert => ["albert.pooler", "classifier"],
        // RobertaClassificationHead: no pooler, both linears live under `classifier`.
        ModelType::Roberta => ["classifier.dense", "classifier.out_proj"],
    }
}

fn linear(out: &mut Vec<(String, Vec<usize>)>, module: &str, rows: usize, cols: usize) {
    out.push((format!("{module}.weight"), vec![rows, cols]));
    out.push((format!("{module}.bias"), vec![rows]));
}

fn norm(out: &mut Vec<(String, Vec<usize>)>, module: &str, dim: usize) {
    out.push((format!("{module}.weight"), vec![dim]));
    out.push((format!("{module}.bias"), vec![dim]));
}

/// Every encoder tensor (heads excluded) with its shape, in forward order.
pub(crate) fn encoder_tensors(cfg: &EncoderConfig) -> Vec<(String, Vec<usize>)> {
    let (h, e, i) = (cfg.hidden_size, cfg.embedding_size, cfg.intermediate_size);
    let p = cfg.model_type.prefix();
    let mut out = vec![
        (format!("{p}.embeddings.word_embeddings.weight"), vec![cfg.vocab_size, e]),
        (format!("{p}.embeddings.position_embeddings.weight"), vec![cfg.max_position_embeddings, e]),
    ];
    if cfg.type_vocab_size > 0 {
        out.push((format!("{p}.embeddings.token_type_embeddings.weight"), vec![cfg.type_vocab_size, e]));
    }
    norm(&mut out, &format!("{p}.embeddings.LayerNorm"), e);
    match cfg.model_type {
        ModelType::Bert | ModelType::Roberta => {
            for l in 0..cfg.num_layers {
                for sub in ["attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"] {
                    linear(&mut out, &bert_layer(p, l, sub), h, h);
                }
                norm(&mut out, &bert_layer(p, l, "attention.output.LayerNorm"), h);
                linear(&mut out, &bert_layer(p, l, "intermediate.dense"), i, h);
                linear(&mut out, &bert_layer(p, l, "output.dense"), h, i);
                norm(&mut out, &bert_layer(p, l, "output.LayerNorm"), h);
            }
        }
        ModelType::DistilBert => {
            for l in 0..cfg.num_layers {
                for sub in ["attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin"] {
                    linear(&mut out, &distilbert_layer(l, sub), h, h);
                }
                norm(&mut out, &distilbert_layer(l, "sa_layer_norm"), h);
                linear(&mut out, &distilbert_layer(l, "ffn.lin1"), i, h);
                linear(&mut out, &distilbert_layer(l, "ffn.lin2"), h, i);
                norm(&mut out, &distilbert_layer(l, "output_layer_norm"), h);
            }
        }
        ModelType::Albert => {
            linear(&mut out, "albert.encoder.embedding_hidden_mapping_in", h, e);
            for g in 0..cfg.num_hidden_groups {
                for j in 0..cfg.inner_group_num {
                    for sub in ["attention.query", "attention.key", "attention.value", "attention.dense"] {
                        linear(&mut out, &albert_layer(g, j, sub), h, h);
                    }
                    norm(&mut out, &albert_layer(g, j, "attention.LayerNorm"), h);
                    linear(&mut out, &albert_layer(g, j, "ffn"), i, h);
                    linear(&mut out, &albert_layer(g, j, "ffn_output"), h, i);
                    norm(&mut out, &albert_layer(g, j, "full_layer_layer_norm"), h);
                }
            }
        }
    }
    out
}

/// The attention and feed-forward linears of every encoder block, as module paths in forward order
/// (ALBERT's shared layers once per group): what [`crate::TargetModules::Default`] adapts. Embedding
/// tables and ALBERT's embedding projection are not block linears.
pub fn block_linears(cfg: &EncoderConfig) -> Vec<String> {
    encoder_tensors(cfg)
        .into_iter()
        .filter(|(name, shape)| shape.len() == 2 && !name.contains("embedding"))
        .filter_map(|(name, _)| name.strip_suffix(".weight").map(str::to_string))
        .collect()
}

/// A block linear's name within its block: the path after the last layer index
/// (`bert.encoder.layer.3.attention.self.query` -> `attention.self.query`).
pub fn within_block(module: &str) -> &str {
    let parts: Vec<&str> = module.split('.').collect();
    match parts.iter().rposition(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) {
        Some(i) if i + 1 < parts.len() => {
            let skip: usize = parts[..=i].iter().map(|p| p.len() + 1).sum();
            &module[skip..]
        }
        _ => module,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_linears_per_architecture() {
        let fixture = |name: &str| {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/parity").join(name).join("config.json");
            EncoderConfig::from_file(&path).unwrap()
        };
        let cfg = fixture("distilbert-tiny");
        let l = block_linears(&cfg);
        assert_eq!(l.len(), 6 * cfg.num_layers);
        assert_eq!(l[0], "distilbert.transformer.layer.0.attention.q_lin");
        assert_eq!(within_block(&l[5]), "ffn.lin2");
        let albert = fixture("albert-tiny");
        let a = block_linears(&albert);
        assert_eq!(a.len(), 6 * albert.num_hidden_groups * albert.inner_group_num);
        assert!(a.iter().all(|m| !m.contains("embedding_hidden_mapping_in")));
        assert_eq!(within_block("albert.encoder.albert_layer_groups.0.albert_layers.0.attention.dense"), "attention.dense");
        assert_eq!(within_block("classifier"), "classifier");
    }
}
