//! Interventions on the glass box: switch parts of the model off and see what changes (in the
//! spirit of TransformerLens's hooks that edit a value).
//!
//! Every ablation here is a **zero ablation**:
//! - a head: its output `z` (`blocks.{l}.attn.z`, pattern · V) is set to zero before the heads
//!   are concatenated and mixed by W_O, so the head adds nothing to the stream;
//! - a layer's attention or MLP: what the sub-layer adds to the residual stream (`attn_out`,
//!   `mlp_out`; on Gemma, after its post-norm) is zero, so the stream skips it.
//!
//! Zero rather than mean ablation: the result does not depend on a reference text. (Zero is not
//! "neutral" for the model, which never saw a head silent in training; mean ablation would
//! replace `z` by its average over a corpus.) Both architectures read the same
//! [`Interventions`] at the same places (`forward::attention` and each layer's residual adds).
//!
//! ```
//! use llm_lab::model::Interventions;
//! use llm_lab::testing::{tiny_model, TinySpec};
//! let (_dir, model) = tiny_model(&TinySpec::default())?;
//! let tokens = [1, 2, 3, 4];
//! let clean = model.run(&tokens)?;
//! let same = model.run_with(&tokens, &Interventions::new())?;
//! assert_eq!(llm_lab::compare::max_abs_diff(&clean, &same)?, 0.0);
//! let ablated = model.run_with(&tokens, &Interventions::new().ablate_head(1, 0))?;
//! assert!(llm_lab::compare::max_abs_diff(&clean, &ablated)? > 0.0);
//! assert!(model.run_with(&tokens, &Interventions::new().ablate_head(99, 0)).is_err());
//! # Ok::<(), llm_lab::Error>(())
//! ```

use std::collections::BTreeSet;

use candle_core::Tensor;

use super::config::Config;
use crate::error::{Error, Result};

/// A set of parts of the model to switch off (zero-ablate) during a forward pass; empty by
/// default (the ordinary forward pass). Build it by chaining:
/// `Interventions::new().ablate_head(5, 2).ablate_mlp(7)`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interventions {
    heads: BTreeSet<(usize, usize)>,
    attention: BTreeSet<usize>,
    mlp: BTreeSet<usize>,
}

impl Interventions {
    /// No intervention.
    pub fn new() -> Self {
        Self::default()
    }

    /// Zeroes head `head` of layer `layer` (its `z`, before W_O).
    pub fn ablate_head(mut self, layer: usize, head: usize) -> Self {
        self.heads.insert((layer, head));
        self
    }

    /// Zeroes what the attention of `layer` adds to the residual stream (all its heads).
    pub fn ablate_attention(mut self, layer: usize) -> Self {
        self.attention.insert(layer);
        self
    }

    /// Zeroes what the MLP of `layer` adds to the residual stream.
    pub fn ablate_mlp(mut self, layer: usize) -> Self {
        self.mlp.insert(layer);
        self
    }

    /// Whether nothing is switched off.
    pub fn is_empty(&self) -> bool {
        self.heads.is_empty() && self.attention.is_empty() && self.mlp.is_empty()
    }

    /// Every layer and head named exists in a model of shape `config`.
    pub(crate) fn check(&self, config: &Config) -> Result<()> {
        let n_layers = config.n_layers;
        let layers = self
            .heads
            .iter()
            .map(|&(l, _)| l)
            .chain(self.attention.iter().copied())
            .chain(self.mlp.iter().copied());
        for l in layers {
            if l >= n_layers {
                return Err(Error::invalid(format!(
                    "cannot ablate layer {l}: the model has layers 0..{n_layers}"
                )));
            }
        }
        if let Some(&(l, h)) = self.heads.iter().find(|&&(_, h)| h >= config.n_heads) {
            return Err(Error::invalid(format!(
                "cannot ablate head {h} of layer {l}: each layer has heads 0..{}",
                config.n_heads
            )));
        }
        Ok(())
    }

    /// `z: [H, seq, d]` with the ablated heads of `layer` set to zero.
    pub(crate) fn apply_to_heads(&self, layer: usize, z: Tensor) -> Result<Tensor> {
        let off: Vec<usize> = self
            .heads
            .range((layer, 0)..(layer + 1, 0))
            .map(|&(_, h)| h)
            .collect();
        if off.is_empty() {
            return Ok(z);
        }
        let n_heads = z.dim(0)?;
        let keep: Vec<f32> = (0..n_heads)
            .map(|h| if off.contains(&h) { 0.0 } else { 1.0 })
            .collect();
        let keep = Tensor::from_vec(keep, (n_heads, 1, 1), z.device())?.to_dtype(z.dtype())?;
        Ok(z.broadcast_mul(&keep)?)
    }

    /// What the attention of `layer` adds to the stream, or zeros if it is ablated.
    pub(crate) fn attention_out(&self, layer: usize, out: Tensor) -> Result<Tensor> {
        if self.attention.contains(&layer) {
            return Ok(out.zeros_like()?);
        }
        Ok(out)
    }

    /// What the MLP of `layer` adds to the stream, or zeros if it is ablated.
    pub(crate) fn mlp_out(&self, layer: usize, out: Tensor) -> Result<Tensor> {
        if self.mlp.contains(&layer) {
            return Ok(out.zeros_like()?);
        }
        Ok(out)
    }
}

/// The empty set, for the ordinary forward pass.
pub(crate) static NONE: Interventions = Interventions {
    heads: BTreeSet::new(),
    attention: BTreeSet::new(),
    mlp: BTreeSet::new(),
};
