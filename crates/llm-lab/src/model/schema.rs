//! One table per architecture: every weight tensor the model reads, under its GGUF and Hugging
//! Face names, with the shape its config implies and where the forward pass finds it.
//!
//! Everything that knows a model's tensors reads this table: the GGUF and Hugging Face loaders,
//! the shape checks that refuse a corrupt file by name, [`WeightShapes`](super::WeightShapes),
//! the printed module tree (`println!("{model}")`) and the tiny-model writer of the tests. A
//! third architecture is a third table (and the forward pass that reads its slots).
//!
//! ```
//! use llm_lab::model::schema::{find, Slot};
//! use llm_lab::model::Architecture;
//! let q = find(Architecture::Llama, Slot::Wq).unwrap();
//! assert_eq!(q.gguf_name(Some(3)), "blk.3.attn_q.weight");
//! assert_eq!(q.hf_name(Some(3)), "model.layers.3.self_attn.q_proj.weight");
//! let c = llm_lab::Config::llama_3_2_1b();
//! assert_eq!(q.shape(&c), [2048, 2048]); // [n_heads · d_head, d_model]
//! ```

use super::config::{Architecture, Config};

/// Where a tensor goes in [`Weights`](super::Weights): the field the forward pass reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Slot {
    /// Token embeddings `[d_vocab, d_model]`.
    Embed,
    /// Final RMSNorm gain `[d_model]`.
    FinalNorm,
    /// Output projection to logits `[d_vocab, d_model]` (absent when tied to the embeddings).
    LmHead,
    /// RMSNorm gain before attention `[d_model]`.
    AttnNorm,
    /// W_Q `[n_heads·d_head, d_model]`.
    Wq,
    /// W_K `[n_kv_heads·d_head, d_model]`.
    Wk,
    /// W_V `[n_kv_heads·d_head, d_model]`.
    Wv,
    /// W_O `[d_model, n_heads·d_head]`.
    Wo,
    /// Gemma: gain of each query head's RMSNorm `[d_head]`.
    QNorm,
    /// Gemma: gain of each key head's RMSNorm `[d_head]`.
    KNorm,
    /// Gemma: RMSNorm gain on attention's output `[d_model]`.
    AttnPostNorm,
    /// RMSNorm gain before the MLP `[d_model]`.
    MlpNorm,
    /// MLP gate projection `[d_mlp, d_model]`.
    Gate,
    /// MLP up projection `[d_mlp, d_model]`.
    Up,
    /// MLP down projection `[d_model, d_mlp]`.
    Down,
    /// Gemma: RMSNorm gain on the MLP's output `[d_model]`.
    MlpPostNorm,
}

/// What kind of numbers a tensor holds, which decides how it is stored and multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A matrix `[out, in]`, applied as `x · Wᵀ`, possibly quantized.
    Matrix,
    /// A norm's gain, one number per dimension, always kept in f32.
    Gain,
}

/// One weight tensor of an architecture.
#[derive(Debug, Clone, Copy)]
pub struct TensorSpec {
    /// Where the loaded tensor goes.
    pub slot: Slot,
    /// GGUF name; `{l}` stands for the layer in a block's tensors.
    pub gguf: &'static str,
    /// Hugging Face name; `{l}` stands for the layer. Its module path is the printed tree's.
    pub hf: &'static str,
    /// Matrix or gain.
    pub kind: Kind,
    /// The shape the config implies, rows first, as GGUF and Hugging Face store it.
    shape: fn(&Config) -> Vec<usize>,
    /// Whether a file may leave it out: only the output matrix, which is then the embeddings.
    pub optional: bool,
    /// Scale of the tiny test models' random values: a matrix's entries are uniform in
    /// `±init / √in`, a gain's in `1 ± init` (the embeddings: `±init`).
    pub init: f32,
}

impl TensorSpec {
    /// Whether the tensor is one per block (`{l}` in its names).
    pub fn per_layer(&self) -> bool {
        self.gguf.contains("{l}")
    }

    /// The GGUF name of layer `layer`'s copy (`None` for a tensor outside the blocks).
    pub fn gguf_name(&self, layer: Option<usize>) -> String {
        fill(self.gguf, layer)
    }

    /// The Hugging Face name of layer `layer`'s copy.
    pub fn hf_name(&self, layer: Option<usize>) -> String {
        fill(self.hf, layer)
    }

    /// The module path inside a block (or the model), as the printed tree nests it:
    /// `self_attn.q_proj`, `input_layernorm`, `embed_tokens`.
    pub fn module(&self) -> &'static str {
        let path = self.hf.strip_suffix(".weight").unwrap_or(self.hf);
        let path = path.strip_prefix("model.layers.{l}.").unwrap_or(path);
        path.strip_prefix("model.").unwrap_or(path)
    }

    /// The shape `config` implies, rows first. Saturating: a config read from a file has passed
    /// [`Config::validate`]; an absurd hand-made one yields absurd numbers, not a wrap-around.
    pub fn shape(&self, config: &Config) -> Vec<usize> {
        (self.shape)(config)
    }

    /// Whether a model with `config` holds this tensor (a tied output matrix is not held).
    pub fn present(&self, config: &Config) -> bool {
        !(self.slot == Slot::LmHead && config.tied_embeddings)
    }

    /// Every name this tensor has in a model of `n_layers` blocks, with its layer.
    pub fn layers(&self, n_layers: usize) -> Vec<Option<usize>> {
        if self.per_layer() {
            (0..n_layers).map(Some).collect()
        } else {
            vec![None]
        }
    }
}

fn fill(pattern: &str, layer: Option<usize>) -> String {
    match layer {
        Some(l) => pattern.replace("{l}", &l.to_string()),
        None => pattern.to_string(),
    }
}

fn vocab_by_model(c: &Config) -> Vec<usize> {
    vec![c.d_vocab, c.d_model]
}
fn model_width(c: &Config) -> Vec<usize> {
    vec![c.d_model]
}
fn head_width(c: &Config) -> Vec<usize> {
    vec![c.d_head]
}
fn query_by_model(c: &Config) -> Vec<usize> {
    vec![c.n_heads.saturating_mul(c.d_head), c.d_model]
}
fn kv_by_model(c: &Config) -> Vec<usize> {
    vec![c.n_kv_heads.saturating_mul(c.d_head), c.d_model]
}
fn model_by_query(c: &Config) -> Vec<usize> {
    vec![c.d_model, c.n_heads.saturating_mul(c.d_head)]
}
fn mlp_by_model(c: &Config) -> Vec<usize> {
    vec![c.d_mlp, c.d_model]
}
fn model_by_mlp(c: &Config) -> Vec<usize> {
    vec![c.d_model, c.d_mlp]
}

const fn spec(
    slot: Slot,
    gguf: &'static str,
    hf: &'static str,
    kind: Kind,
    shape: fn(&Config) -> Vec<usize>,
    init: f32,
) -> TensorSpec {
    TensorSpec {
        slot,
        gguf,
        hf,
        kind,
        shape,
        optional: matches!(slot, Slot::LmHead),
        init,
    }
}

use Kind::{Gain, Matrix};

/// Llama (SmolLM2, Llama 3.x), in the order llama.cpp's converter writes a block. Columns: slot,
/// GGUF name, Hugging Face name, kind, shape, the tiny models' init scale.
#[rustfmt::skip]
const LLAMA: &[TensorSpec] = &[
    spec(Slot::Embed,      "token_embd.weight",           "model.embed_tokens.weight",                         Matrix,  vocab_by_model,  1.0),
    spec(Slot::AttnNorm,   "blk.{l}.attn_norm.weight",    "model.layers.{l}.input_layernorm.weight",           Gain,    model_width,     0.2),
    spec(Slot::Wq,         "blk.{l}.attn_q.weight",       "model.layers.{l}.self_attn.q_proj.weight",          Matrix,  query_by_model,  2.0),
    spec(Slot::Wk,         "blk.{l}.attn_k.weight",       "model.layers.{l}.self_attn.k_proj.weight",          Matrix,  kv_by_model,     2.0),
    spec(Slot::Wv,         "blk.{l}.attn_v.weight",       "model.layers.{l}.self_attn.v_proj.weight",          Matrix,  kv_by_model,     1.0),
    spec(Slot::Wo,         "blk.{l}.attn_output.weight",  "model.layers.{l}.self_attn.o_proj.weight",          Matrix,  model_by_query,  1.0),
    spec(Slot::MlpNorm,    "blk.{l}.ffn_norm.weight",     "model.layers.{l}.post_attention_layernorm.weight",  Gain,    model_width,     0.2),
    spec(Slot::Gate,       "blk.{l}.ffn_gate.weight",     "model.layers.{l}.mlp.gate_proj.weight",             Matrix,  mlp_by_model,    1.0),
    spec(Slot::Up,         "blk.{l}.ffn_up.weight",       "model.layers.{l}.mlp.up_proj.weight",               Matrix,  mlp_by_model,    1.0),
    spec(Slot::Down,       "blk.{l}.ffn_down.weight",     "model.layers.{l}.mlp.down_proj.weight",             Matrix,  model_by_mlp,    1.0),
    spec(Slot::FinalNorm,  "output_norm.weight",          "model.norm.weight",                                 Gain,    model_width,     0.2),
    spec(Slot::LmHead,     "output.weight",               "lm_head.weight",                                    Matrix,  vocab_by_model,  1.0),
];

/// Gemma 3 (text part). Hugging Face names its norms after their place around the sub-layers:
/// its `post_attention_layernorm` is the norm on attention's output, not Llama's pre-MLP norm.
#[rustfmt::skip]
const GEMMA3: &[TensorSpec] = &[
    spec(Slot::Embed,         "token_embd.weight",                   "model.embed_tokens.weight",                           Matrix,  vocab_by_model,  1.0),
    spec(Slot::AttnNorm,      "blk.{l}.attn_norm.weight",            "model.layers.{l}.input_layernorm.weight",             Gain,    model_width,     0.2),
    spec(Slot::Wq,            "blk.{l}.attn_q.weight",               "model.layers.{l}.self_attn.q_proj.weight",            Matrix,  query_by_model,  2.0),
    spec(Slot::Wk,            "blk.{l}.attn_k.weight",               "model.layers.{l}.self_attn.k_proj.weight",            Matrix,  kv_by_model,     2.0),
    spec(Slot::Wv,            "blk.{l}.attn_v.weight",               "model.layers.{l}.self_attn.v_proj.weight",            Matrix,  kv_by_model,     1.0),
    spec(Slot::Wo,            "blk.{l}.attn_output.weight",          "model.layers.{l}.self_attn.o_proj.weight",            Matrix,  model_by_query,  1.0),
    spec(Slot::QNorm,         "blk.{l}.attn_q_norm.weight",          "model.layers.{l}.self_attn.q_norm.weight",            Gain,    head_width,      0.2),
    spec(Slot::KNorm,         "blk.{l}.attn_k_norm.weight",          "model.layers.{l}.self_attn.k_norm.weight",            Gain,    head_width,      0.2),
    spec(Slot::AttnPostNorm,  "blk.{l}.post_attention_norm.weight",  "model.layers.{l}.post_attention_layernorm.weight",    Gain,    model_width,     0.2),
    spec(Slot::MlpNorm,       "blk.{l}.ffn_norm.weight",             "model.layers.{l}.pre_feedforward_layernorm.weight",   Gain,    model_width,     0.2),
    spec(Slot::Gate,          "blk.{l}.ffn_gate.weight",             "model.layers.{l}.mlp.gate_proj.weight",               Matrix,  mlp_by_model,    1.0),
    spec(Slot::Up,            "blk.{l}.ffn_up.weight",               "model.layers.{l}.mlp.up_proj.weight",                 Matrix,  mlp_by_model,    1.0),
    spec(Slot::Down,          "blk.{l}.ffn_down.weight",             "model.layers.{l}.mlp.down_proj.weight",               Matrix,  model_by_mlp,    1.0),
    spec(Slot::MlpPostNorm,   "blk.{l}.post_ffw_norm.weight",        "model.layers.{l}.post_feedforward_layernorm.weight",  Gain,    model_width,     0.2),
    spec(Slot::FinalNorm,     "output_norm.weight",                  "model.norm.weight",                                   Gain,    model_width,     0.2),
    spec(Slot::LmHead,        "output.weight",                       "lm_head.weight",                                      Matrix,  vocab_by_model,  1.0),
];

/// The tensors of `architecture`, in the order its files list them.
pub fn tensors(architecture: Architecture) -> &'static [TensorSpec] {
    match architecture {
        Architecture::Llama => LLAMA,
        Architecture::Gemma3 => GEMMA3,
    }
}

/// The entry of `architecture`'s table that fills `slot`, if it has one.
pub fn find(architecture: Architecture, slot: Slot) -> Option<&'static TensorSpec> {
    tensors(architecture).iter().find(|t| t.slot == slot)
}

/// Every tensor a model with `config` holds: `(spec, layer)`, in file order (blocks in turn).
pub fn instances(config: &Config) -> Vec<(&'static TensorSpec, Option<usize>)> {
    let table = tensors(config.architecture);
    let mut out = Vec::new();
    let mut push = |t: &'static TensorSpec, l| {
        if t.present(config) {
            out.push((t, l));
        }
    };
    for t in table.iter().take_while(|t| !t.per_layer()) {
        push(t, None);
    }
    for l in 0..config.n_layers {
        for t in table.iter().filter(|t| t.per_layer()) {
            push(t, Some(l));
        }
    }
    for t in table
        .iter()
        .skip_while(|t| !t.per_layer())
        .filter(|t| !t.per_layer())
    {
        push(t, None);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_appears_once_per_table_and_names_are_unique() {
        for arch in [Architecture::Llama, Architecture::Gemma3] {
            let t = tensors(arch);
            for (i, a) in t.iter().enumerate() {
                for b in &t[i + 1..] {
                    assert_ne!(a.slot, b.slot, "{arch}: {:?} twice", a.slot);
                    assert_ne!(a.gguf, b.gguf);
                    assert_ne!(a.hf, b.hf);
                }
                assert_eq!(a.per_layer(), a.hf.contains("{l}"), "{}", a.gguf);
                let dims = a.shape(&Config::llama_3_2_1b()).len();
                assert_eq!(
                    dims,
                    if a.kind == Kind::Matrix { 2 } else { 1 },
                    "{}",
                    a.gguf
                );
            }
        }
    }

    #[test]
    fn instances_list_blocks_in_turn_and_leave_out_a_tied_output() {
        let c = Config::llama_3_2_1b();
        let names: Vec<String> = instances(&c).iter().map(|(t, l)| t.gguf_name(*l)).collect();
        assert_eq!(names[0], "token_embd.weight");
        assert_eq!(names[1], "blk.0.attn_norm.weight");
        assert_eq!(names[10], "blk.1.attn_norm.weight");
        assert_eq!(names.last().unwrap(), "output_norm.weight");
        assert_eq!(names.len(), 1 + 9 * 16 + 1);
        let untied = Config {
            tied_embeddings: false,
            ..c
        };
        assert_eq!(instances(&untied).last().unwrap().0.slot, Slot::LmHead);
    }
}
