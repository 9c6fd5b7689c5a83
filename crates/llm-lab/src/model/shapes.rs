//! The names and shapes of a model's weight tensors, without their numbers: enough to count its
//! heads, KV heads and layers from the matrices themselves rather than from a config field.
//!
//! Names follow GGUF (`token_embd.weight`, `blk.{l}.attn_q.weight`, …) whatever the source, and
//! a matrix's shape is `[rows, columns]` = `[out, in]`, as GGUF and Hugging Face store it: W_Q of
//! a model with `H` heads of width `d` and width `D` is `[H·d, D]`, the transpose of the lecture's
//! `X · W_Q`.

use std::fmt;
use std::path::Path;

use super::{Architecture, Config, Weights};
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
    /// [`crate::Model::weight_shapes`] (tests/shapes.rs).
    pub fn from_config(c: &Config) -> Self {
        // Saturating: a config from a file has passed `Config::validate`; a hand-made absurd one
        // yields absurd but harmless numbers here rather than a wrap-around.
        let q = c.n_heads.saturating_mul(c.d_head);
        let kv = c.n_kv_heads.saturating_mul(c.d_head);
        let d = c.d_model;
        let gemma = c.architecture == Architecture::Gemma3;
        let mut v = vec![("token_embd.weight".to_string(), vec![c.d_vocab, d])];
        for l in 0..c.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            v.extend([
                (n("attn_norm"), vec![d]),
                (n("attn_q"), vec![q, d]),
                (n("attn_k"), vec![kv, d]),
                (n("attn_v"), vec![kv, d]),
                (n("attn_output"), vec![d, q]),
            ]);
            if gemma {
                v.extend([
                    (n("attn_q_norm"), vec![c.d_head]),
                    (n("attn_k_norm"), vec![c.d_head]),
                    (n("post_attention_norm"), vec![d]),
                ]);
            }
            v.extend([
                (n("ffn_norm"), vec![d]),
                (n("ffn_gate"), vec![c.d_mlp, d]),
                (n("ffn_up"), vec![c.d_mlp, d]),
                (n("ffn_down"), vec![d, c.d_mlp]),
            ]);
            if gemma {
                v.push((n("post_ffw_norm"), vec![d]));
            }
        }
        v.push(("output_norm.weight".to_string(), vec![d]));
        if !c.tied_embeddings {
            v.push(("output.weight".to_string(), vec![c.d_vocab, d]));
        }
        Self::new(c.name.clone(), v)
    }

    /// The shapes of loaded weights, named as in GGUF.
    pub fn of_weights(model: impl Into<String>, w: &Weights, tied_embeddings: bool) -> Self {
        let lin = |l: &super::Linear| vec![l.out_features, l.in_features];
        let mut v = vec![("token_embd.weight".to_string(), lin(&w.embed))];
        for (l, b) in w.blocks.iter().enumerate() {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            let gain =
                |s: &str, t: Option<&candle_core::Tensor>| t.map(|t| (n(s), t.dims().to_vec()));
            v.extend(gain("attn_norm", Some(&b.attn_norm)));
            v.extend([
                (n("attn_q"), lin(&b.w_q)),
                (n("attn_k"), lin(&b.w_k)),
                (n("attn_v"), lin(&b.w_v)),
                (n("attn_output"), lin(&b.w_o)),
            ]);
            v.extend(gain("attn_q_norm", b.q_norm.as_ref()));
            v.extend(gain("attn_k_norm", b.k_norm.as_ref()));
            v.extend(gain("post_attention_norm", b.attn_post_norm.as_ref()));
            v.extend(gain("ffn_norm", Some(&b.mlp_norm)));
            v.extend([
                (n("ffn_gate"), lin(&b.w_gate)),
                (n("ffn_up"), lin(&b.w_up)),
                (n("ffn_down"), lin(&b.w_down)),
            ]);
            v.extend(gain("post_ffw_norm", b.mlp_post_norm.as_ref()));
        }
        v.push((
            "output_norm.weight".to_string(),
            w.final_norm.dims().to_vec(),
        ));
        if !tied_embeddings {
            v.push(("output.weight".to_string(), lin(&w.lm_head)));
        }
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
        WeightShapes::of_weights(
            self.config.name.clone(),
            &self.weights,
            self.config.tied_embeddings,
        )
    }
}
