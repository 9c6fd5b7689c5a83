//! `println!("{model}")` prints the module tree like PyTorch's `print(model)`, with shapes,
//! storage formats and parameter counts.

use std::fmt;

use super::Model;

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
        let c = &self.config;
        let w = &self.weights;
        let lin = |name: &str, l: &super::Linear| {
            format!(
                "({name}): Linear(in_features={}, out_features={}, bias=False)  [{}]",
                l.in_features, l.out_features, l.format
            )
        };
        let b = &w.blocks[0];
        writeln!(f, "LlamaForCausalLM(  # {}", c.name)?;
        writeln!(f, "  (model): LlamaModel(")?;
        writeln!(
            f,
            "    (embed_tokens): Embedding({}, {})  [{}]",
            c.d_vocab, c.d_model, w.embed.format
        )?;
        writeln!(f, "    (layers): {} × LlamaDecoderLayer(", c.n_layers)?;
        writeln!(
            f,
            "      (self_attn): LlamaAttention(  # {} heads, {} kv heads, head dim {}",
            c.n_heads, c.n_kv_heads, c.d_head
        )?;
        for (n, l) in [
            ("q_proj", &b.w_q),
            ("k_proj", &b.w_k),
            ("v_proj", &b.w_v),
            ("o_proj", &b.w_o),
        ] {
            writeln!(f, "        {}", lin(n, l))?;
        }
        writeln!(f, "      )")?;
        writeln!(f, "      (mlp): LlamaMLP(")?;
        for (n, l) in [
            ("gate_proj", &b.w_gate),
            ("up_proj", &b.w_up),
            ("down_proj", &b.w_down),
        ] {
            writeln!(f, "        {}", lin(n, l))?;
        }
        writeln!(f, "        (act_fn): SiLU()")?;
        writeln!(f, "      )")?;
        writeln!(
            f,
            "      (input_layernorm): LlamaRMSNorm(({},), eps={:e})",
            c.d_model, c.rms_norm_eps as f32
        )?;
        writeln!(
            f,
            "      (post_attention_layernorm): LlamaRMSNorm(({},), eps={:e})",
            c.d_model, c.rms_norm_eps as f32
        )?;
        writeln!(f, "    )")?;
        writeln!(
            f,
            "    (norm): LlamaRMSNorm(({},), eps={:e})",
            c.d_model, c.rms_norm_eps as f32
        )?;
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
        writeln!(f, "  )")?;
        if c.tied_embeddings {
            writeln!(f, "  (lm_head): Linear(in_features={}, out_features={}, bias=False)  [tied to embed_tokens]", c.d_model, c.d_vocab)?;
        } else {
            writeln!(f, "  {}", lin("lm_head", &w.lm_head))?;
        }
        writeln!(f, ")")?;
        writeln!(f, "parameters: {}", thousands(self.n_params()))?;
        writeln!(f, "layers: {}", c.n_layers)?;
        writeln!(f, "heads: {}", c.n_heads)?;
        writeln!(f, "kv heads: {}", c.n_kv_heads)?;
        writeln!(f, "head dim: {}", c.d_head)?;
        writeln!(f, "d_model: {}", c.d_model)?;
        writeln!(f, "d_mlp: {}", c.d_mlp)?;
        writeln!(f, "vocab: {}", c.d_vocab)?;
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
