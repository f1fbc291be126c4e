//! The post-LN transformer encoder shared by BERT, DistilBERT, ALBERT and RoBERTa, and the
//! classification head. Modules hold [`LinearId`]s into the classifier's arena of [`AdaptableLinear`]s, so adapters
//! can be merged in place and a shared ALBERT layer is one module however often it runs.
//!
//! Ports transformers' `BertEmbeddings`/`BertLayer`, `DistilBert` `Embeddings`/`TransformerBlock`,
//! `AlbertEmbeddings`/`AlbertLayer`, `RobertaEmbeddings`/`RobertaClassificationHead` (eager
//! attention, post-LN).

use candle_core::{DType, Tensor};

use crate::config::Activation;
use crate::error::Result;
use crate::linear::AdaptableLinear;
use crate::ops;
use crate::param::{Ctx, Param};
use crate::positions::position_ids_from_input_ids;

/// Index of a linear in the classifier's arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LinearId(pub usize);

/// LayerNorm over the last dimension.
#[derive(Debug, Clone)]
pub(crate) struct LayerNorm {
    pub weight: Param,
    pub bias: Param,
    pub eps: f64,
}

impl LayerNorm {
    pub fn forward(&self, x: &Tensor, ctx: &Ctx) -> Result<Tensor> {
        Ok(ops::layer_norm(x, &self.weight.get(ctx), &self.bias.get(ctx), self.eps)?)
    }

    /// `LN(dropout(x, p) + residual)` as one fused op (dropout only when `dropout` and the pass
    /// has a dropout seed).
    pub fn forward_residual(&self, x: &Tensor, residual: &Tensor, dropout: Option<f64>, ctx: &Ctx) -> Result<Tensor> {
        let drop = dropout.and_then(|p| ctx.next_dropout_seed(p).map(|seed| (p as f32, seed)));
        Ok(ops::residual_layer_norm(x, residual, &self.weight.get(ctx), &self.bias.get(ctx), self.eps, drop)?)
    }
}

/// Applies an activation with the backward-capable ops.
pub(crate) fn activate(x: &Tensor, act: Activation) -> Result<Tensor> {
    Ok(match act {
        Activation::GeluErf => ops::gelu_erf(x)?,
        Activation::GeluTanh => ops::gelu_tanh(x)?,
        Activation::Relu => x.relu()?,
    })
}

/// Which row of the position table each token reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PositionIds {
    /// `0..T` in every row (BERT, DistilBERT, ALBERT).
    Sequential,
    /// RoBERTa: non-padding tokens count up from `padding_idx + 1`, pads read row `padding_idx`.
    AfterPadding { padding_idx: u32 },
}

/// Word + position (+ token type) embeddings, LayerNorm, dropout; ALBERT then projects E -> H.
#[derive(Debug, Clone)]
pub(crate) struct Embeddings {
    pub word: Param,
    pub position: Param,
    pub position_ids: PositionIds,
    pub token_type: Option<Param>,
    pub norm: LayerNorm,
    pub projection: Option<LinearId>,
}

/// One post-LN layer: `n1 = LN(h + drop(O(attn(h))))`, `out = LN(n1 + drop(W2(act(W1(n1)))))`.
#[derive(Debug, Clone)]
pub(crate) struct Block {
    pub query: LinearId,
    pub key: LinearId,
    pub value: LinearId,
    pub attn_out: LinearId,
    pub attn_norm: LayerNorm,
    pub ffn_in: LinearId,
    pub ffn_out: LinearId,
    pub ffn_norm: LayerNorm,
    /// Dropout on the attention output projection before the residual (BERT, ALBERT).
    pub attn_residual_dropout: bool,
    /// Dropout on the feed-forward output before the residual (BERT, DistilBERT).
    pub ffn_residual_dropout: bool,
}

/// Dropout probabilities in effect when training.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DropoutRates {
    pub hidden: f64,
    pub attention: f64,
    pub classifier: f64,
}

/// Embeddings, the distinct blocks, and the order they run in (ALBERT repeats shared blocks).
#[derive(Debug, Clone)]
pub(crate) struct Encoder {
    pub embeddings: Embeddings,
    pub blocks: Vec<Block>,
    pub schedule: Vec<usize>,
    pub num_heads: usize,
    pub act: Activation,
    pub dropout: DropoutRates,
}

/// Head activation between the dense layer and the classifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeadAct {
    /// BERT / ALBERT pooler.
    Tanh,
    /// DistilBERT pre_classifier.
    Relu,
}

/// `classifier(dropout(act(dense(h_cls))))`; RoBERTa also drops out `h_cls` before `dense`.
#[derive(Debug, Clone)]
pub(crate) struct Head {
    pub dense: LinearId,
    pub act: HeadAct,
    pub dropout_before_dense: bool,
    pub classifier: LinearId,
}

/// `[B, T]` 0/1 attention mask -> additive bias `[B, 1, 1, T]`: 0 at kept keys, `f32::MIN` at padding.
pub(crate) fn mask_bias(attention_mask: &Tensor) -> Result<Tensor> {
    let (b, t) = attention_mask.dims2()?;
    let m = attention_mask.to_dtype(DType::F32)?;
    // (1 - m) * MIN == m * (-MIN) + MIN, exact for m in {0, 1}.
    Ok(m.affine(-(f32::MIN as f64), f32::MIN as f64)?.reshape((b, 1, 1, t))?)
}

impl Encoder {
    /// Hidden states `[B, T, H]` of the last layer.
    pub fn forward(
        &self,
        linears: &[AdaptableLinear],
        input_ids: &Tensor,
        token_type_ids: &Tensor,
        attention_mask: &Tensor,
        ctx: &Ctx,
    ) -> Result<Tensor> {
        let (b, t) = input_ids.dims2()?;
        let e = &self.embeddings;
        let word = e.word.get(ctx);
        let dim = word.dim(1)?;
        let mut x = word.index_select(&input_ids.flatten_all()?, 0)?.reshape((b, t, dim))?;
        let position = e.position.get(ctx);
        x = match e.position_ids {
            PositionIds::Sequential => x.broadcast_add(&position.narrow(0, 0, t)?)?,
            PositionIds::AfterPadding { padding_idx } => {
                let ids = position_ids_from_input_ids(input_ids, padding_idx)?;
                (x + position.index_select(&ids.flatten_all()?, 0)?.reshape((b, t, dim))?)?
            }
        };
        if let Some(tt) = &e.token_type {
            let types = tt.get(ctx).index_select(&token_type_ids.flatten_all()?, 0)?.reshape((b, t, dim))?;
            x = (x + types)?;
        }
        x = e.norm.forward(&x, ctx)?;
        x = ctx.dropout(&x, self.dropout.hidden)?;
        if let Some(p) = e.projection {
            x = linears[p.0].forward(&x, ctx)?;
        }
        let bias = mask_bias(attention_mask)?;
        for &i in &self.schedule {
            x = self.block_forward(&self.blocks[i], linears, &x, &bias, ctx)?;
        }
        Ok(x)
    }

    fn block_forward(
        &self,
        block: &Block,
        linears: &[AdaptableLinear],
        h: &Tensor,
        bias: &Tensor,
        ctx: &Ctx,
    ) -> Result<Tensor> {
        let project = |id: LinearId| linears[id.0].forward(h, ctx);
        let (q, k, v) = (project(block.query)?, project(block.key)?, project(block.value)?);
        // Fused attention on [B, T, heads·d] (no head split copies); dropout on the probabilities.
        let p = self.dropout.attention;
        let dropout = ctx.next_dropout_seed(p).map(|seed| ops::AttentionDropout { p: p as f32, seed });
        let context = ops::attention(&q, &k, &v, Some(bias), self.num_heads, dropout)?;
        let attn = linears[block.attn_out.0].forward(&context, ctx)?;
        let hidden_drop = |on: bool| on.then_some(self.dropout.hidden);
        let n1 = block.attn_norm.forward_residual(&attn, h, hidden_drop(block.attn_residual_dropout), ctx)?;
        let inner = activate(&linears[block.ffn_in.0].forward(&n1, ctx)?, self.act)?;
        let ffn = linears[block.ffn_out.0].forward(&inner, ctx)?;
        block.ffn_norm.forward_residual(&ffn, &n1, hidden_drop(block.ffn_residual_dropout), ctx)
    }
}

impl Head {
    /// `(classifier_input, logits)` from the last hidden states `[B, T, H]`.
    pub fn forward(
        &self,
        linears: &[AdaptableLinear],
        hidden: &Tensor,
        classifier_dropout: f64,
        ctx: &Ctx,
    ) -> Result<(Tensor, Tensor)> {
        let mut cls = hidden.narrow(1, 0, 1)?.squeeze(1)?;
        if self.dropout_before_dense {
            cls = ctx.dropout(&cls, classifier_dropout)?;
        }
        let pooled = linears[self.dense.0].forward(&cls, ctx)?;
        let pooled = match self.act {
            HeadAct::Tanh => pooled.tanh()?,
            HeadAct::Relu => pooled.relu()?,
        };
        let input = ctx.dropout(&pooled, classifier_dropout)?;
        let logits = linears[self.classifier.0].forward(&input, ctx)?;
        Ok((input, logits))
    }
}
