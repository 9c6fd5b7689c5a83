//! What a traced forward pass records, under stable names (in the spirit of TransformerLens's
//! hook points). Each name is a [`Hook`]; its `Display` is the string name, and string names
//! parse back, so `trace.get("blocks.3.attn.pattern")`, `trace.get(Hook::Pattern(3))`,
//! `trace[Hook::Pattern(3)]` and `trace.pattern(3)` are the same tensor.
//!
//! | hook | name | shape | where it is taken |
//! |---|---|---|---|
//! | `Embed` | `embed` | `[seq, d_model]` | token embeddings, the stream entering layer 0 (Gemma: already × √d_model) |
//! | `ResidPre(l)` | `blocks.{l}.resid_pre` | `[seq, d_model]` | residual stream entering layer `l`, before its first norm |
//! | `Q(l)` | `blocks.{l}.attn.q` | `[n_heads, seq, d_head]` | queries per head, after the norm and W_Q, **before** RoPE |
//! | `K(l)` | `blocks.{l}.attn.k` | `[n_heads, seq, d_head]` | keys, same place, before RoPE; repeated for grouped heads |
//! | `V(l)` | `blocks.{l}.attn.v` | `[n_heads, seq_k, d_head]` | values (cached ones included); repeated for grouped heads |
//! | `RotQ(l)` | `blocks.{l}.attn.rot_q` | `[n_heads, seq, d_head]` | queries **after** RoPE: what meets the keys in Q·Kᵀ |
//! | `RotK(l)` | `blocks.{l}.attn.rot_k` | `[n_heads, seq_k, d_head]` | keys after RoPE (cached ones included); repeated for grouped heads |
//! | `Pattern(l)` | `blocks.{l}.attn.pattern` | `[n_heads, seq, seq_k]` | attention probabilities, after the mask and softmax |
//! | `Z(l)` | `blocks.{l}.attn.z` | `[n_heads, seq, d_head]` | each head's output (pattern · V), before the heads are concatenated and mixed by W_O |
//! | `AttnOut(l)` | `blocks.{l}.attn_out` | `[seq, d_model]` | what attention adds to the stream (after W_O) |
//! | `ResidMid(l)` | `blocks.{l}.resid_mid` | `[seq, d_model]` | stream after the attention residual, before the MLP's norm |
//! | `MlpOut(l)` | `blocks.{l}.mlp_out` | `[seq, d_model]` | what the MLP adds to the stream |
//! | `FinalResid` | `final.resid` | `[seq, d_model]` | stream after the last layer, before the final norm |
//!
//! `Q`, `K`, `V`, `RotQ`, `RotK` and `Z` are recorded only with [`TraceOptions::qkv`]. With a KV
//! cache, `seq_k` counts every cached position and `seq` only the new ones.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use candle_core::Tensor;

use crate::error::{Error, Result};

/// A named place in the forward pass where a tensor is recorded (see the module's table).
///
/// ```
/// use llm_lab::model::Hook;
/// assert_eq!(Hook::Pattern(3).to_string(), "blocks.3.attn.pattern");
/// assert_eq!("blocks.3.attn.pattern".parse::<Hook>()?, Hook::Pattern(3));
/// assert_eq!("final.resid".parse::<Hook>()?, Hook::FinalResid);
/// assert!("blocks.x.attn.pattern".parse::<Hook>().is_err());
/// # Ok::<(), llm_lab::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Hook {
    /// `embed`: token embeddings.
    Embed,
    /// `blocks.{l}.resid_pre`: the stream entering layer `l`.
    ResidPre(usize),
    /// `blocks.{l}.attn.q`: queries before RoPE.
    Q(usize),
    /// `blocks.{l}.attn.k`: keys before RoPE.
    K(usize),
    /// `blocks.{l}.attn.v`: values.
    V(usize),
    /// `blocks.{l}.attn.rot_q`: queries after RoPE.
    RotQ(usize),
    /// `blocks.{l}.attn.rot_k`: keys after RoPE.
    RotK(usize),
    /// `blocks.{l}.attn.pattern`: attention probabilities.
    Pattern(usize),
    /// `blocks.{l}.attn.z`: each head's output before W_O.
    Z(usize),
    /// `blocks.{l}.attn_out`: what attention adds to the stream.
    AttnOut(usize),
    /// `blocks.{l}.resid_mid`: the stream between attention and MLP.
    ResidMid(usize),
    /// `blocks.{l}.mlp_out`: what the MLP adds to the stream.
    MlpOut(usize),
    /// `final.resid`: the stream after the last layer, before the final norm.
    FinalResid,
}

/// Makes a layer's hook from its layer number.
type LayerHook = fn(usize) -> Hook;

/// The per-layer hooks, with the suffix of their names.
const LAYER_HOOKS: [(&str, LayerHook); 11] = [
    ("resid_pre", Hook::ResidPre),
    ("attn.q", Hook::Q),
    ("attn.k", Hook::K),
    ("attn.v", Hook::V),
    ("attn.rot_q", Hook::RotQ),
    ("attn.rot_k", Hook::RotK),
    ("attn.pattern", Hook::Pattern),
    ("attn.z", Hook::Z),
    ("attn_out", Hook::AttnOut),
    ("resid_mid", Hook::ResidMid),
    ("mlp_out", Hook::MlpOut),
];

impl Hook {
    /// The layer this hook belongs to (None for `embed` and `final.resid`).
    pub fn layer(self) -> Option<usize> {
        use Hook::*;
        match self {
            Embed | FinalResid => None,
            ResidPre(l) | Q(l) | K(l) | V(l) | RotQ(l) | RotK(l) | Pattern(l) | Z(l)
            | AttnOut(l) | ResidMid(l) | MlpOut(l) => Some(l),
        }
    }

    /// Whether it is recorded only with [`TraceOptions::qkv`].
    pub fn needs_qkv(self) -> bool {
        use Hook::*;
        matches!(self, Q(_) | K(_) | V(_) | RotQ(_) | RotK(_) | Z(_))
    }
}

impl fmt::Display for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self, self.layer()) {
            (Hook::Embed, _) => f.write_str("embed"),
            (Hook::FinalResid, _) => f.write_str("final.resid"),
            (hook, Some(l)) => {
                let suffix = LAYER_HOOKS
                    .iter()
                    .find(|(_, make)| make(l) == *hook)
                    .map_or("?", |(s, _)| s);
                write!(f, "blocks.{l}.{suffix}")
            }
            (_, None) => unreachable!("only embed and final.resid have no layer"),
        }
    }
}

impl FromStr for Hook {
    type Err = Error;
    fn from_str(s: &str) -> Result<Hook> {
        let bad = || {
            Error::invalid(format!(
                "`{s}` is not a trace name; names look like `blocks.0.attn.pattern`, \
                 `blocks.3.resid_pre`, `embed` or `final.resid` (see llm_lab::model::trace)"
            ))
        };
        match s {
            "embed" => return Ok(Hook::Embed),
            "final.resid" => return Ok(Hook::FinalResid),
            _ => {}
        }
        let rest = s.strip_prefix("blocks.").ok_or_else(bad)?;
        let (layer, suffix) = rest.split_once('.').ok_or_else(bad)?;
        let layer: usize = layer.parse().map_err(|_| bad())?;
        LAYER_HOOKS
            .iter()
            .find(|(name, _)| *name == suffix)
            .map(|(_, make)| make(layer))
            .ok_or_else(bad)
    }
}

/// Something that names a hook: a [`Hook`], or its string name.
pub trait AsHook {
    /// The hook, or an error that lists what names look like.
    fn as_hook(&self) -> Result<Hook>;
}

impl AsHook for Hook {
    fn as_hook(&self) -> Result<Hook> {
        Ok(*self)
    }
}

impl AsHook for &str {
    fn as_hook(&self) -> Result<Hook> {
        self.parse()
    }
}

impl AsHook for String {
    fn as_hook(&self) -> Result<Hook> {
        self.parse()
    }
}

impl AsHook for &String {
    fn as_hook(&self) -> Result<Hook> {
        self.parse()
    }
}

/// What to record besides the always-recorded attention patterns and residual stream.
#[derive(Debug, Clone, Copy, Default)]
pub struct TraceOptions {
    /// Also record queries, keys and values per head, before and after RoPE, and each head's output.
    pub qkv: bool,
}

/// Internals recorded by [`crate::Model::run_with_trace`], with the tokens they belong to.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub(crate) options: TraceOptions,
    /// The token ids this forward pass read.
    pub tokens: Vec<u32>,
    /// The text of each token, to label plots.
    pub labels: Vec<String>,
    tensors: BTreeMap<Hook, Tensor>,
}

impl Trace {
    pub(crate) fn new(options: TraceOptions, tokens: &[u32], labels: Vec<String>) -> Self {
        Trace {
            options,
            tokens: tokens.to_vec(),
            labels,
            tensors: BTreeMap::new(),
        }
    }

    /// Whether the forward pass should record `hook`.
    pub(crate) fn wants(&self, hook: Hook) -> bool {
        !hook.needs_qkv() || self.options.qkv
    }

    pub(crate) fn record(&mut self, hook: Hook, t: &Tensor) {
        if self.wants(hook) {
            self.tensors.insert(hook, t.clone());
        }
    }

    /// Every recorded hook, in the order of the forward pass.
    pub fn hooks(&self) -> Vec<Hook> {
        let mut hooks: Vec<Hook> = self.tensors.keys().copied().collect();
        hooks.sort_by_key(|&h| match (h, h.layer()) {
            (Hook::Embed, _) => (0, 0, h),
            (_, Some(l)) => (1, l, h),
            _ => (2, 0, h),
        });
        hooks
    }

    /// Every recorded name, in the order of the forward pass.
    pub fn names(&self) -> Vec<String> {
        self.hooks().iter().map(Hook::to_string).collect()
    }

    /// The tensor recorded at `hook` (a [`Hook`] or its name; see the module's table).
    pub fn get(&self, hook: impl AsHook) -> Result<&Tensor> {
        let hook = hook.as_hook()?;
        self.tensors.get(&hook).ok_or_else(|| {
            let why = if hook.needs_qkv() && !self.options.qkv {
                "it is recorded only with TraceOptions { qkv: true }".to_string()
            } else {
                format!("this trace has layers 0..{}", self.n_layers())
            };
            Error::invalid(format!("nothing was recorded as `{hook}`: {why}"))
        })
    }

    /// Number of layers recorded.
    pub fn n_layers(&self) -> usize {
        self.tensors
            .keys()
            .filter(|k| matches!(k, Hook::Pattern(_)))
            .count()
    }

    /// `blocks.{layer}.attn.pattern`: `[n_heads, seq, seq_k]`.
    pub fn pattern(&self, layer: usize) -> Result<&Tensor> {
        self.get(Hook::Pattern(layer))
    }

    /// `blocks.{layer}.resid_pre`: `[seq, d_model]`.
    pub fn resid_pre(&self, layer: usize) -> Result<&Tensor> {
        self.get(Hook::ResidPre(layer))
    }

    /// `blocks.{layer}.resid_mid`: `[seq, d_model]`.
    pub fn resid_mid(&self, layer: usize) -> Result<&Tensor> {
        self.get(Hook::ResidMid(layer))
    }

    /// `blocks.{layer}.attn_out`: `[seq, d_model]`.
    pub fn attn_out(&self, layer: usize) -> Result<&Tensor> {
        self.get(Hook::AttnOut(layer))
    }

    /// `blocks.{layer}.mlp_out`: `[seq, d_model]`.
    pub fn mlp_out(&self, layer: usize) -> Result<&Tensor> {
        self.get(Hook::MlpOut(layer))
    }

    /// Attention probabilities of one head: `pattern[query][key]`.
    pub fn attention(&self, layer: usize, head: usize) -> Result<Vec<Vec<f32>>> {
        let p = self.pattern(layer)?;
        let n_heads = p.dim(0)?;
        if head >= n_heads {
            return Err(Error::invalid(format!(
                "head {head} does not exist: layer {layer} has heads 0..{n_heads}"
            )));
        }
        Ok(p.get(head)?.to_vec2::<f32>()?)
    }

    /// The residual stream entering `layer` (`layer == n_layers` gives the final stream).
    pub fn residual(&self, layer: usize) -> Result<&Tensor> {
        if layer == self.n_layers() {
            self.get(Hook::FinalResid)
        } else {
            self.resid_pre(layer)
        }
    }
}

impl std::ops::Index<Hook> for Trace {
    type Output = Tensor;
    /// `trace[Hook::Pattern(3)]`; panics with the reason when nothing was recorded there (use
    /// [`Trace::get`] for a `Result`).
    fn index(&self, hook: Hook) -> &Tensor {
        match self.get(hook) {
            Ok(t) => t,
            Err(e) => panic!("{e}"),
        }
    }
}
