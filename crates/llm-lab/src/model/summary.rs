//! `println!("{model}")` prints the module tree like PyTorch's `print(model)`, with shapes,
//! storage formats and parameter counts.

use std::fmt;

use super::{schema, Architecture, Model, Param};

fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.tree(f)?;
        self.numbers(f)
    }
}

/// The class names of Hugging Face's implementation, which the tree borrows.
struct Classes {
    prefix: &'static str,
    inner_model: &'static str,
    act_fn: &'static str,
}

fn classes(architecture: Architecture) -> Classes {
    match architecture {
        Architecture::Llama => Classes {
            prefix: "Llama",
            inner_model: "LlamaModel",
            act_fn: "SiLU",
        },
        Architecture::Gemma3 => Classes {
            prefix: "Gemma3",
            inner_model: "Gemma3TextModel",
            act_fn: "GELUTanh",
        },
    }
}

impl Model {
    /// Hugging Face's module tree (`print(model)` in PyTorch), one leaf per tensor of the
    /// architecture's table ([`schema`]), nested by its Hugging Face module path. Gemma's RMSNorm
    /// multiplies by `1 + w`; the GGUF stores `1 + w` already, which is why llm-lab's norms read
    /// the gains as they are.
    fn tree(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let w = &self.weights;
        let k = classes(c.architecture);
        let p = k.prefix;
        let table = schema::tensors(c.architecture);
        let leaf = |t: &schema::TensorSpec, layer: Option<usize>| -> String {
            let name = t.module().rsplit('.').next().unwrap_or_default();
            match w.param(t.slot, layer) {
                Some(Param::Matrix(l)) => format!(
                    "({name}): Linear(in_features={}, out_features={}, bias=False)  [{}]",
                    l.in_features, l.out_features, l.format
                ),
                Some(Param::Gain(g)) => format!(
                    "({name}): {p}RMSNorm(({},), eps={:e})",
                    g.elem_count(),
                    c.rms_norm_eps as f32
                ),
                None => format!("({name}): absent"),
            }
        };
        // The block's leaves under one module (`self_attn`, `mlp`) or directly in the block ("").
        let in_block = |module: &str| -> Vec<String> {
            table
                .iter()
                .filter(|t| t.per_layer())
                .filter(|t| match t.module().rsplit_once('.') {
                    Some((parent, _)) => parent == module,
                    None => module.is_empty(),
                })
                .map(|t| leaf(t, Some(0)))
                .collect()
        };
        let top = |slot: schema::Slot| schema::find(c.architecture, slot);

        writeln!(f, "{p}ForCausalLM(  # {}", c.name)?;
        writeln!(f, "  (model): {}(", k.inner_model)?;
        let embed = &w.embed;
        match c.architecture {
            Architecture::Llama => writeln!(
                f,
                "    (embed_tokens): Embedding({}, {})  [{}]",
                c.d_vocab, c.d_model, embed.format
            )?,
            Architecture::Gemma3 => writeln!(
                f,
                "    (embed_tokens): Gemma3TextScaledWordEmbedding({}, {}, scale=√{} ≈ {:.3})  [{}]",
                c.d_vocab, c.d_model, c.d_model, c.embedding_scale, embed.format
            )?,
        }
        let kinds = match c.sliding_window {
            Some(win) => {
                let global: Vec<String> = (0..c.n_layers)
                    .filter(|&l| !c.is_local(l))
                    .map(|l| l.to_string())
                    .collect();
                format!(
                    "  # global: layers {}; the others local (window {win})",
                    global.join(", ")
                )
            }
            None => String::new(),
        };
        writeln!(f, "    (layers): {} × {p}DecoderLayer({kinds}", c.n_layers)?;
        writeln!(
            f,
            "      (self_attn): {p}Attention(  # {} heads, {} kv heads, head dim {}",
            c.n_heads, c.n_kv_heads, c.d_head
        )?;
        for line in in_block("self_attn") {
            writeln!(f, "        {line}")?;
        }
        writeln!(f, "      )")?;
        writeln!(f, "      (mlp): {p}MLP(")?;
        for line in in_block("mlp") {
            writeln!(f, "        {line}")?;
        }
        writeln!(f, "        (act_fn): {}()", k.act_fn)?;
        writeln!(f, "      )")?;
        for line in in_block("") {
            writeln!(f, "      {line}")?;
        }
        writeln!(f, "    )")?;
        if let Some(t) = top(schema::Slot::FinalNorm) {
            writeln!(f, "    {}", leaf(t, None))?;
        }
        match c.architecture {
            Architecture::Llama => {
                let scaling = if c.rope_scaling.is_some() {
                    ", llama3 scaling"
                } else {
                    ""
                };
                writeln!(
                    f,
                    "    (rotary_emb): LlamaRotaryEmbedding(theta={}{scaling})",
                    c.rope_theta
                )?;
            }
            Architecture::Gemma3 => {
                writeln!(
                    f,
                    "    (rotary_emb): Gemma3RotaryEmbedding(theta={})  # global layers",
                    c.rope_theta
                )?;
                if c.sliding_window.is_some() {
                    writeln!(
                        f,
                        "    (rotary_emb_local): Gemma3RotaryEmbedding(theta={})  # local layers",
                        c.rope_theta_local
                    )?;
                }
            }
        }
        writeln!(f, "  )")?;
        match top(schema::Slot::LmHead) {
            Some(t) if !c.tied_embeddings => writeln!(f, "  {}", leaf(t, None))?,
            _ => writeln!(f, "  (lm_head): Linear(in_features={}, out_features={}, bias=False)  [tied to embed_tokens]", c.d_model, c.d_vocab)?,
        }
        writeln!(f, ")")
    }

    /// The numbers a lesson counts, one per line, the same on every architecture.
    fn numbers(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(f, "parameters: {}", thousands(self.n_params()))?;
        writeln!(f, "layers: {}", c.n_layers)?;
        writeln!(f, "heads: {}", c.n_heads)?;
        writeln!(f, "kv heads: {}", c.n_kv_heads)?;
        writeln!(f, "head dim: {}", c.d_head)?;
        writeln!(f, "d_model: {}", c.d_model)?;
        writeln!(f, "d_mlp: {}", c.d_mlp)?;
        writeln!(f, "vocab: {}", c.d_vocab)?;
        if let Some(win) = c.sliding_window {
            writeln!(f, "sliding window: {win}")?;
        }
        write!(f, "context: {}", c.n_ctx)
    }
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Model({}, {} layers, {} heads, from {})",
            self.config.name,
            self.config.n_layers,
            self.config.n_heads,
            self.source.display()
        )
    }
}
