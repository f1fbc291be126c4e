//! Assembles BERT, DistilBERT, ALBERT and RoBERTa from their transformers tensor names (see `names`).

use crate::builder::Builder;
use crate::config::{EncoderConfig, ModelType};
use crate::encoder::{Block, DropoutRates, Embeddings, Encoder, Head, HeadAct, PositionIds};
use crate::error::Result;
use crate::names::{albert_layer, bert_layer, distilbert_layer, head_modules};

/// Builds the encoder and head of `cfg`'s architecture.
pub(crate) fn build(cfg: &EncoderConfig, b: &mut Builder<'_>, dropout: DropoutRates) -> Result<(Encoder, Head)> {
    let (h, e, i, eps) = (cfg.hidden_size, cfg.embedding_size, cfg.intermediate_size, cfg.layer_norm_eps);
    let p = cfg.model_type.prefix();
    let word = b.param(&format!("{p}.embeddings.word_embeddings.weight"), &[cfg.vocab_size, e])?;
    let position = b.param(&format!("{p}.embeddings.position_embeddings.weight"), &[cfg.max_position_embeddings, e])?;
    let token_type = if cfg.type_vocab_size > 0 {
        Some(b.param(&format!("{p}.embeddings.token_type_embeddings.weight"), &[cfg.type_vocab_size, e])?)
    } else {
        None
    };
    let norm = b.layer_norm(&format!("{p}.embeddings.LayerNorm"), e, eps)?;
    let projection = match cfg.model_type {
        ModelType::Albert => Some(b.linear("albert.encoder.embedding_hidden_mapping_in", h, e)?),
        _ => None,
    };
    let position_ids = match cfg.model_type {
        ModelType::Roberta => PositionIds::AfterPadding { padding_idx: cfg.pad_token_id },
        _ => PositionIds::Sequential,
    };
    let embeddings = Embeddings { word, position, position_ids, token_type, norm, projection };

    let mut blocks = Vec::new();
    let schedule: Vec<usize> = match cfg.model_type {
        ModelType::Bert | ModelType::Roberta => {
            for l in 0..cfg.num_layers {
                let m = |s: &str| bert_layer(p, l, s);
                blocks.push(Block {
                    query: b.linear(&m("attention.self.query"), h, h)?,
                    key: b.linear(&m("attention.self.key"), h, h)?,
                    value: b.linear(&m("attention.self.value"), h, h)?,
                    attn_out: b.linear(&m("attention.output.dense"), h, h)?,
                    attn_norm: b.layer_norm(&m("attention.output.LayerNorm"), h, eps)?,
                    ffn_in: b.linear(&m("intermediate.dense"), i, h)?,
                    ffn_out: b.linear(&m("output.dense"), h, i)?,
                    ffn_norm: b.layer_norm(&m("output.LayerNorm"), h, eps)?,
                    attn_residual_dropout: true,
                    ffn_residual_dropout: true,
                });
            }
            (0..cfg.num_layers).collect()
        }
        ModelType::DistilBert => {
            for l in 0..cfg.num_layers {
                let m = |s: &str| distilbert_layer(l, s);
                blocks.push(Block {
                    query: b.linear(&m("attention.q_lin"), h, h)?,
                    key: b.linear(&m("attention.k_lin"), h, h)?,
                    value: b.linear(&m("attention.v_lin"), h, h)?,
                    attn_out: b.linear(&m("attention.out_lin"), h, h)?,
                    attn_norm: b.layer_norm(&m("sa_layer_norm"), h, eps)?,
                    ffn_in: b.linear(&m("ffn.lin1"), i, h)?,
                    ffn_out: b.linear(&m("ffn.lin2"), h, i)?,
                    ffn_norm: b.layer_norm(&m("output_layer_norm"), h, eps)?,
                    attn_residual_dropout: false,
                    ffn_residual_dropout: true,
                });
            }
            (0..cfg.num_layers).collect()
        }
        ModelType::Albert => {
            for g in 0..cfg.num_hidden_groups {
                for j in 0..cfg.inner_group_num {
                    let m = |s: &str| albert_layer(g, j, s);
                    blocks.push(Block {
                        query: b.linear(&m("attention.query"), h, h)?,
                        key: b.linear(&m("attention.key"), h, h)?,
                        value: b.linear(&m("attention.value"), h, h)?,
                        attn_out: b.linear(&m("attention.dense"), h, h)?,
                        attn_norm: b.layer_norm(&m("attention.LayerNorm"), h, eps)?,
                        ffn_in: b.linear(&m("ffn"), i, h)?,
                        ffn_out: b.linear(&m("ffn_output"), h, i)?,
                        ffn_norm: b.layer_norm(&m("full_layer_layer_norm"), h, eps)?,
                        attn_residual_dropout: true,
                        ffn_residual_dropout: false,
                    });
                }
            }
            // Layer l runs group l / (layers / groups), each group's inner layers in order.
            let per_group = cfg.num_layers / cfg.num_hidden_groups;
            (0..cfg.num_layers)
                .flat_map(|l| {
                    let g = l / per_group;
                    (0..cfg.inner_group_num).map(move |j| g * cfg.inner_group_num + j)
                })
                .collect()
        }
    };
    let [dense, classifier] = head_modules(cfg.model_type);
    let head = Head {
        dense: b.linear(dense, h, h)?,
        act: if cfg.model_type == ModelType::DistilBert { HeadAct::Relu } else { HeadAct::Tanh },
        // RobertaClassificationHead drops out the `<s>` state before its dense layer too.
        dropout_before_dense: cfg.model_type == ModelType::Roberta,
        classifier: b.linear(classifier, b.num_labels(), h)?,
    };
    let encoder = Encoder { embeddings, blocks, schedule, num_heads: cfg.num_heads, act: cfg.hidden_act, dropout };
    Ok((encoder, head))
}
