//! What a traced forward pass records, under stable names (in the spirit of TransformerLens).
//!
//! | name | shape | what |
//! |---|---|---|
//! | `blocks.{l}.resid_pre` | `[seq, d_model]` | residual stream entering layer `l` |
//! | `blocks.{l}.attn.pattern` | `[n_heads, seq_q, seq_k]` | attention probabilities, after softmax |
//! | `blocks.{l}.attn_out` | `[seq, d_model]` | what attention adds to the stream (after W_O) |
//! | `blocks.{l}.resid_mid` | `[seq, d_model]` | stream after the attention residual |
//! | `blocks.{l}.mlp_out` | `[seq, d_model]` | what the MLP adds to the stream |
//! | `blocks.{l}.attn.q` / `.k` / `.v` | `[n_heads, seq, d_head]` | per head, only with [`TraceOptions::qkv`]; k and v already repeated for grouped heads |
//! | `final.resid` | `[seq, d_model]` | stream after the last layer, before the final norm |
//!
//! With a KV cache, `seq_k` counts every cached position and `seq_q` only the new ones.

use std::collections::BTreeMap;

use candle_core::Tensor;

use crate::error::{Error, Result};

/// What to record besides the always-recorded attention patterns and residual stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceOptions {
    /// Also record queries, keys and values per head.
    pub qkv: bool,
}

/// Internals recorded by [`crate::Model::run_with_trace`].
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub(crate) options: TraceOptions,
    /// The token ids this forward pass read.
    pub tokens: Vec<u32>,
    tensors: BTreeMap<String, Tensor>,
}

impl Trace {
    pub(crate) fn new(options: TraceOptions, tokens: &[u32]) -> Self {
        Trace {
            options,
            tokens: tokens.to_vec(),
            tensors: BTreeMap::new(),
        }
    }

    pub(crate) fn record(&mut self, name: String, t: &Tensor) {
        self.tensors.insert(name, t.clone());
    }

    /// All recorded names, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.tensors.keys().map(String::as_str).collect()
    }

    /// The tensor recorded as `name` (see the table in this module's docs).
    pub fn get(&self, name: &str) -> Result<&Tensor> {
        self.tensors.get(name).ok_or_else(|| {
            Error::invalid(format!(
                "nothing was recorded as `{name}`; names look like `blocks.0.attn.pattern` (qkv needs TraceOptions {{ qkv: true }})"
            ))
        })
    }

    /// Number of layers recorded.
    pub fn n_layers(&self) -> usize {
        self.tensors
            .keys()
            .filter(|k| k.ends_with(".attn.pattern"))
            .count()
    }

    /// Attention probabilities of one head: `pattern[query][key]`.
    pub fn attention(&self, layer: usize, head: usize) -> Result<Vec<Vec<f32>>> {
        let p = self.get(&format!("blocks.{layer}.attn.pattern"))?;
        let n_heads = p.dim(0)?;
        if head >= n_heads {
            return Err(Error::invalid(format!(
                "head {head} does not exist: layer {layer} has heads 0..{n_heads}"
            )));
        }
        Ok(p.get(head)?.to_vec2::<f32>()?)
    }

    /// One head's attention pattern as a heatmap, with `tokens` on both axes.
    pub fn attention_figure(
        &self,
        layer: usize,
        head: usize,
        tokens: &[String],
    ) -> Result<crate::plot::Figure> {
        crate::plot::attention(
            &format!("camada {layer}, cabeça {head}"),
            &self.attention(layer, head)?,
            tokens,
        )
    }

    /// Every head of `layer`, side by side.
    pub fn attention_grid(&self, layer: usize, tokens: &[String]) -> Result<crate::plot::Figure> {
        let n = self.get(&format!("blocks.{layer}.attn.pattern"))?.dim(0)?;
        let figs = (0..n)
            .map(|h| self.attention_figure(layer, h, tokens))
            .collect::<Result<Vec<_>>>()?;
        Ok(crate::plot::Figure::row(&figs))
    }

    /// The residual stream entering `layer` (`layer == n_layers` gives the final stream).
    pub fn residual(&self, layer: usize) -> Result<&Tensor> {
        if layer == self.n_layers() {
            self.get("final.resid")
        } else {
            self.get(&format!("blocks.{layer}.resid_pre"))
        }
    }
}
