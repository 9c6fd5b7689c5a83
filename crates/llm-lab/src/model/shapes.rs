//! The names and shapes of a model's weight tensors, without their numbers: enough to count its
//! heads, KV heads and layers from the matrices themselves rather than from a config field.
//!
//! Names follow GGUF (`token_embd.weight`, `blk.{l}.attn_q.weight`, …) whatever the source, and
//! a matrix's shape is `[rows, columns]` = `[out, in]`, as GGUF and Hugging Face store it: W_Q of
//! a model with `H` heads of width `d` and width `D` is `[H·d, D]`, the transpose of the lecture's
//! `X · W_Q`.

use std::fmt;
use std::path::Path;

use super::{schema, Config, Weights};
use crate::error::Result;
use crate::gguf::Gguf;

/// Tensor names and their shapes (rows first), in the order a model reads them.
///
/// ```
/// use llm_lab::model::WeightShapes;
/// let s = WeightShapes::from_config(&llm_lab::Config::llama_3_2_1b());
/// assert_eq!(s.get("blk.0.attn_q.weight"), Some(&[2048, 2048][..])); // 32 heads × 64
/// assert_eq!(s.get("blk.0.attn_k.weight"), Some(&[512, 2048][..])); // 8 KV heads × 64
/// assert!(s.get("blk.16.attn_q.weight").is_none()); // 16 blocks: 0 to 15
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightShapes {
    /// Which model these shapes describe.
    pub model: String,
    entries: Vec<(String, Vec<usize>)>,
}

impl WeightShapes {
    /// Shapes given by hand, e.g. for a made-up model.
    pub fn new(
        model: impl Into<String>,
        entries: impl IntoIterator<Item = (String, Vec<usize>)>,
    ) -> Self {
        WeightShapes {
            model: model.into(),
            entries: entries.into_iter().collect(),
        }
    }

    /// The tensors a model with this config holds, named as in GGUF. This is how the course
    /// ships Llama 3.2 1B and 3B without their weights: their shapes follow from the published
    /// config ([`Config::llama_3_2_1b`], [`Config::llama_3_2_3b`]); for a loaded model they equal
    /// [`crate::Model::weight_shapes`] (tests/shapes.rs). Both read the architecture's table
    /// ([`schema`](super::schema)).
    pub fn from_config(c: &Config) -> Self {
        let v = schema::instances(c)
            .into_iter()
            .map(|(t, l)| (t.gguf_name(l), t.shape(c)));
        Self::new(c.name.clone(), v)
    }

    /// The shapes of loaded weights, named as in GGUF.
    pub fn of_weights(model: impl Into<String>, w: &Weights, config: &Config) -> Self {
        let v = schema::instances(config)
            .into_iter()
            .filter_map(|(t, l)| Some((t.gguf_name(l), w.param(t.slot, l)?.shape())));
        Self::new(model, v)
    }

    /// Every tensor listed in a GGUF file's header, read without loading any weight (a model of
    /// a few GB is read in milliseconds). Tensors not in a model's blocks (such as Llama 3's
    /// `rope_freqs.weight`) are listed too.
    pub fn read_gguf(path: impl AsRef<Path>) -> Result<Self> {
        let g = Gguf::open(path.as_ref())?;
        let mut v: Vec<(String, Vec<usize>)> = g
            .content
            .tensor_infos
            .iter()
            .map(|(name, info)| (name.clone(), info.shape.dims().to_vec()))
            .collect();
        v.sort_by_key(|(name, _)| (block_of(name), name.clone()));
        let model = g
            .meta_str("general.name")
            .map(str::to_string)
            .unwrap_or_else(|| path.as_ref().display().to_string());
        Ok(Self::new(model, v))
    }

    /// The shape of the tensor `name`, if there is one.
    pub fn get(&self, name: &str) -> Option<&[usize]> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, s)| s.as_slice())
    }

    /// Rows of the matrix `name` (its first dimension); 0 when there is no such tensor.
    pub fn rows(&self, name: &str) -> usize {
        self.get(name).and_then(|s| s.first().copied()).unwrap_or(0)
    }

    /// Columns of the matrix `name` (its second dimension); 0 when there is none.
    pub fn cols(&self, name: &str) -> usize {
        self.get(name).and_then(|s| s.get(1).copied()).unwrap_or(0)
    }

    /// Every tensor's name, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// Every `(name, shape)`, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[usize])> {
        self.entries.iter().map(|(n, s)| (n.as_str(), s.as_slice()))
    }

    /// How many tensors.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there is no tensor at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Sort key: tensors outside blocks first, then by block number (so `blk.10` follows `blk.9`).
fn block_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

impl fmt::Display for WeightShapes {
    /// One line per tensor: `name  [rows, cols]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} ({} tensores)", self.model, self.entries.len())?;
        for (name, shape) in &self.entries {
            writeln!(f, "  {name:<32} {shape:?}")?;
        }
        Ok(())
    }
}

impl super::Model {
    /// The names and shapes of this model's weights, named as in GGUF (see [`WeightShapes`]).
    pub fn weight_shapes(&self) -> WeightShapes {
        WeightShapes::of_weights(self.config.name.clone(), &self.weights, &self.config)
    }
}
