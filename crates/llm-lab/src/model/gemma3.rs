//! The forward pass of a Gemma 3 model, top to bottom: the same skeleton as Llama's
//! (`forward.rs`), whose pieces it reuses. Each difference from Llama is marked **Gemma:**
//! where it happens:
//!
//! 1. the token embeddings are multiplied by √d_model (in `forward::embed`);
//! 2. each query and key head is RMS-normalised before RoPE (in `forward::attention`);
//! 3. every sub-layer is wrapped in two norms: one before (as in Llama) and one on its output,
//!    before the residual add;
//! 4. the MLP is gated by GELU (tanh approximation) instead of SiLU;
//! 5. five *local* layers, then one *global* one: a local layer's query sees only the last
//!    `sliding_window` positions (512) and rotates with RoPE base 10,000; a global layer sees
//!    everything and uses base 10⁶ (the file's);
//! 6. RoPE pairs dimension i with i + d/2 (half-split): llama.cpp's converter leaves Gemma's
//!    Q/K rows as trained, unlike Llama's, which it permutes for interleaved pairs.
//!
//! Alike: grouped-query attention (here one KV head shared by all four query heads), the
//! attention scale 1/√d_head (llama.cpp's gemma3 uses it for every size but 27B, whose
//! `query_pre_attn_scalar` differs), the final RMSNorm and the tied output matrix. The RMSNorm
//! gains are used as stored: Gemma's RMSNorm multiplies by `1 + w`, and llama.cpp's converter
//! stores `1 + w` in the GGUF.
//!
//! Shapes use: `seq` new tokens, `past` tokens already in the cache, `ctx = past + seq`,
//! `D = d_model`, `H = n_heads`, `Hkv = n_kv_heads`, `d = d_head`, `V = d_vocab`. Batch size is 1.

use candle_core::Tensor;

use super::config::Config;
use super::forward::{self, rms_norm, PassState, Placement, Positions};
use super::trace::Hook;
use super::weights::Weights;
use crate::error::{Error, Result};

/// Runs the model on `tokens` (appended after what the cache holds) and returns logits.
pub(crate) fn forward(
    config: &Config,
    w: &Weights,
    tokens: &[u32],
    mut st: PassState<'_>,
    positions: Positions,
) -> Result<Tensor> {
    let device = w.final_norm.device();
    let seq = tokens.len();
    let past = st.cache.len();
    let eps = config.rms_norm_eps;

    // Token embeddings. Gemma: scaled by √d_model.
    let mut x = forward::embed(config, w, tokens)?; // [seq, D]
    st.record(Hook::Embed, &x);

    // Gemma: two kinds of layer, each with its own rotation angles and mask.
    let (g_cos, g_sin) = forward::rope_tables(&config.rope_inv_freqs(), past, seq, device)?; // [seq, d/2] ×2
    let g_mask = forward::causal_mask(seq, past, None, device)?; // [seq, ctx]: the whole past
    let (l_cos, l_sin) = forward::rope_tables(&config.rope_inv_freqs_local(), past, seq, device)?;
    let l_mask = forward::causal_mask(seq, past, config.sliding_window, device)?; // [seq, ctx]: the window
    let (global, local) = (
        Placement {
            cos: &g_cos,
            sin: &g_sin,
            mask: &g_mask,
            style: w.rope_style,
        },
        Placement {
            cos: &l_cos,
            sin: &l_sin,
            mask: &l_mask,
            style: w.rope_style,
        },
    );

    for (l, block) in w.blocks.iter().enumerate() {
        let at = if config.is_local(l) { &local } else { &global };
        let post_norms = block
            .attn
            .post_norm
            .as_ref()
            .zip(block.mlp.post_norm.as_ref());
        let Some((attn_post_norm, mlp_post_norm)) = post_norms else {
            return Err(Error::invalid(format!(
                "layer {l} has no post-norm gains: these weights are not a Gemma 3 model's"
            )));
        };
        st.record(Hook::ResidPre(l), &x);

        // Attention sub-layer. Gemma: x + RMSNorm(Attn(RMSNorm(x))), the second norm on the
        // sub-layer's output before it joins the stream.
        let h = rms_norm(&x, &block.attn.norm, eps)?; // [seq, D]
        let raw = forward::attention(config, l, &block.attn, &h, at, &mut st)?; // [seq, D]
        let attn = st
            .iv
            .attention_out(l, rms_norm(&raw, attn_post_norm, eps)?)?; // [seq, D]
        x = (x + &attn)?;

        // MLP sub-layer, wrapped the same way. Gemma: GELU instead of SiLU in the gate.
        let h = rms_norm(&x, &block.mlp.norm, eps)?; // [seq, D]
        let raw_mlp = forward::gated_mlp(&block.mlp, &h, config.mlp_activation)?; // [seq, D]
        let mlp = st.iv.mlp_out(l, rms_norm(&raw_mlp, mlp_post_norm, eps)?)?; // [seq, D]
        st.record(Hook::AttnBeforePostNorm(l), &raw);
        st.record(Hook::AttnOut(l), &attn);
        st.record(Hook::ResidMid(l), &x);
        st.record(Hook::MlpBeforePostNorm(l), &raw_mlp);
        st.record(Hook::MlpOut(l), &mlp);
        x = (x + mlp)?;
    }
    forward::finish(config, w, x, st, positions) // [seq or 1, V]
}
