//! The forward pass of a Llama model, top to bottom, in one place. (Gemma 3's, in `gemma3.rs`,
//! reuses its pieces and names where it differs.)
//!
//! Read it beside the lecture: tokens become vectors, each layer lets every position look at the
//! earlier ones (attention) and then think on its own (MLP), both added to a running *residual
//! stream*; the last vector of the stream is scored against every word of the vocabulary (logits).
//!
//! Shapes use: `seq` new tokens, `past` tokens already in the cache, `ctx = past + seq`,
//! `D = d_model`, `H = n_heads`, `Hkv = n_kv_heads`, `d = d_head`, `V = d_vocab`. Batch size is 1.

use candle_core::{DType, Device, Tensor};

use super::attend::attend;
use super::cache::KvCache;
use super::config::{Activation, Config};
use super::gelu::gelu_tanh;
use super::intervene::Interventions;
use super::trace::{Hook, Trace};
use super::weights::{AttentionWeights, Linear, MlpWeights, RopeStyle, Weights};
use crate::error::Result;

/// Which positions' logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Positions {
    /// `[seq, V]`: every position (training's view, the logit lens).
    All,
    /// `[1, V]`: only the last (generation).
    Last,
}

/// What a forward pass carries through the layers besides the stream: the cache it reads and
/// fills, the trace it records into, and the parts of the model it switches off.
pub(crate) struct PassState<'a> {
    pub cache: &'a mut KvCache,
    pub trace: Option<&'a mut Trace>,
    pub iv: &'a Interventions,
}

impl PassState<'_> {
    /// Records `t` under `hook` when a trace is being kept.
    pub(crate) fn record(&mut self, hook: Hook, t: &Tensor) {
        if let Some(trace) = self.trace.as_deref_mut() {
            trace.record(hook, t);
        }
    }
}

/// Where a layer's new tokens sit: the rotation angles of their positions and the mask of the
/// keys each may see (Gemma's local and global layers differ in both).
pub(crate) struct Placement<'a> {
    pub cos: &'a Tensor,  // [seq, d/2]
    pub sin: &'a Tensor,  // [seq, d/2]
    pub mask: &'a Tensor, // [seq, ctx], 0 or -inf
    pub style: RopeStyle, // how dimensions are paired for rotation
}

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

    // Token embeddings: one row of the table per token.
    let mut x = embed(config, w, tokens)?; // [seq, D]
    st.record(Hook::Embed, &x);

    // Rotation angles for positions past..past+seq; the mask hides the future.
    let (cos, sin) = rope_tables(&config.rope_inv_freqs(), past, seq, device)?; // [seq, d/2] each
    let mask = causal_mask(seq, past, None, device)?; // [seq, ctx], 0 or -inf
    let at = Placement {
        cos: &cos,
        sin: &sin,
        mask: &mask,
        style: w.rope_style,
    };

    for (l, block) in w.blocks.iter().enumerate() {
        st.record(Hook::ResidPre(l), &x);
        // Attention sub-layer, pre-norm: x + Attn(RMSNorm(x)).
        let h = rms_norm(&x, &block.attn.norm, eps)?; // [seq, D]
        let attn = attention(config, l, &block.attn, &h, &at, &mut st)?; // [seq, D]
        let attn = st.iv.attention_out(l, attn)?; // zeros if this layer's attention is ablated
        x = (x + &attn)?;
        // MLP sub-layer, pre-norm: x + MLP(RMSNorm(x)).
        let h = rms_norm(&x, &block.mlp.norm, eps)?; // [seq, D]
        let mlp = gated_mlp(&block.mlp, &h, config.mlp_activation)?; // [seq, D]
        let mlp = st.iv.mlp_out(l, mlp)?;
        st.record(Hook::AttnOut(l), &attn);
        st.record(Hook::ResidMid(l), &x);
        st.record(Hook::MlpOut(l), &mlp);
        x = (x + mlp)?;
    }
    finish(config, w, x, st, positions) // [seq or 1, V]
}

/// The end of every architecture's pass: the cache takes the new positions, the last stream is
/// recorded, and the positions asked for are scored against the vocabulary.
pub(crate) fn finish(
    config: &Config,
    w: &Weights,
    x: Tensor, // [seq, D]
    mut st: PassState<'_>,
    positions: Positions,
) -> Result<Tensor> {
    let seq = x.dim(0)?;
    st.cache.advance(seq);
    st.record(Hook::FinalResid, &x);
    let x = match positions {
        Positions::All => x,
        Positions::Last => x.narrow(0, seq - 1, 1)?,
    }; // [seq or 1, D]
    unembed(config, w, &x) // [seq or 1, V]
}

/// The first step: each token id picks its row of the embedding table, `[seq] → [seq, D]`.
pub(crate) fn embed(config: &Config, w: &Weights, tokens: &[u32]) -> Result<Tensor> {
    let ids = Tensor::new(tokens, w.final_norm.device())?; // [seq]
    let x = w.embed.embedding(&ids)?; // [seq, D]
    if config.embedding_scale == 1.0 {
        return Ok(x);
    }
    // Gemma: the rows are multiplied by √d_model (≈ 25.3 for d_model 640), so that they weigh
    // as much as the normalised sub-layer outputs later added to the stream.
    Ok((x * config.embedding_scale as f64)?) // [seq, D]
}

/// The last step: final norm, then a score for every vocabulary entry,
/// `logits = RMSNorm(x) · W_outᵀ`, `[n, D] → [n, V]`.
pub(crate) fn unembed(config: &Config, w: &Weights, x: &Tensor) -> Result<Tensor> {
    let x = rms_norm(x, &w.final_norm, config.rms_norm_eps)?; // [n, D]
    Ok(w.lm_head.forward(&x)?) // [n, V]
}

/// Multi-head self-attention with grouped KV heads and rotary positions: `[seq, D] → [seq, D]`.
pub(crate) fn attention(
    config: &Config,
    layer: usize,
    w: &AttentionWeights,
    h: &Tensor, // [seq, D], already normalised
    at: &Placement<'_>,
    st: &mut PassState<'_>,
) -> Result<Tensor> {
    let (seq, _) = h.dims2()?;
    let (n_h, n_kv, d) = (config.n_heads, config.n_kv_heads, config.d_head);

    // Project to queries, keys and values (one pass over h for the three), then split the width
    // into heads.
    let [q, k, v] = Linear::forward_many([&w.w_q, &w.w_k, &w.w_v], h)?;
    let q = split_heads(&q, n_h, d)?; // [H, seq, d]
    let k = split_heads(&k, n_kv, d)?; // [Hkv, seq, d]
    let v = split_heads(&v, n_kv, d)?; // [Hkv, seq, d]

    // Gemma: each query and key head is RMS-normalised over its d dimensions (own gain per
    // dimension, shared by the heads) before RoPE, which keeps the scores q·k in range.
    let (q, k) = match &w.qk_norm {
        Some((q_gain, k_gain)) => (
            rms_norm(&q, q_gain, config.rms_norm_eps)?, // [H, seq, d]
            rms_norm(&k, k_gain, config.rms_norm_eps)?, // [Hkv, seq, d]
        ),
        None => (q, k),
    };
    let g = n_h / n_kv;
    if st.trace.as_deref().is_some_and(|t| t.wants(Hook::Q(layer))) {
        st.record(Hook::Q(layer), &q);
        st.record(Hook::K(layer), &repeat_kv(&k, g)?);
    }

    // Positions enter here, by rotating q and k (RoPE), not by adding a vector to the input.
    let q = rope(&q, at.cos, at.sin, at.style)?; // [H, seq, d]
    let k = rope(&k, at.cos, at.sin, at.style)?; // [Hkv, seq, d]

    // Keys and values of earlier tokens come from the cache.
    let (k, v) = st.cache.append(layer, &k, &v)?; // [Hkv, ctx, d] each

    // softmax(Q Kᵀ / √d + mask) V for every head (see `attend` for how it is computed).
    let keep_pattern = st.trace.is_some();
    let window = config.window(layer);
    let (heads, pattern) = attend(&q, &k, &v, at.mask, window, keep_pattern)?; // [H, seq, d], [H, seq, ctx]

    // Ablated heads (see `intervene`) give zeros here, so W_O mixes nothing of them in.
    let heads = st.iv.apply_to_heads(layer, heads)?; // [H, seq, d]

    // Concatenate the heads and mix them with W_O.
    let concat = heads.transpose(0, 1)?.reshape((seq, n_h * d))?; // [seq, H·d]
    let out = w.w_o.forward(&concat)?; // [seq, D]

    if let Some(p) = &pattern {
        st.record(Hook::Pattern(layer), p);
    }
    if st
        .trace
        .as_deref()
        .is_some_and(|t| t.wants(Hook::RotQ(layer)))
    {
        st.record(Hook::RotQ(layer), &q);
        st.record(Hook::RotK(layer), &repeat_kv(&k, g)?);
        st.record(Hook::V(layer), &repeat_kv(&v, g)?);
        st.record(Hook::Z(layer), &heads);
    }
    Ok(out)
}

/// Gated MLP: `W_down · (act(W_gate · x) ⊙ W_up · x)`, `[seq, D] → [seq, D]`. Llama's act is
/// SiLU (SwiGLU); Gemma's is GELU with the tanh approximation (GeGLU).
pub(crate) fn gated_mlp(w: &MlpWeights, h: &Tensor, act: Activation) -> Result<Tensor> {
    let [gate, up] = Linear::forward_many([&w.w_gate, &w.w_up], h)?; // [seq, d_mlp] each
    let gate = match act {
        Activation::Silu => candle_nn::ops::silu(&gate)?,
        Activation::GeluTanh => gelu_tanh(&gate)?,
    };
    Ok(w.w_down.forward(&(gate * up)?)?) // [seq, D]
}

/// RMSNorm: `x / sqrt(mean(x²) + ε) · g`, per row. Llama's normalisation: no mean subtracted, no bias.
pub(crate) fn rms_norm(x: &Tensor, gain: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(candle_nn::ops::rms_norm(x, gain, eps as f32)?)
}

/// `[seq, n·d] → [n, seq, d]`.
pub(crate) fn split_heads(x: &Tensor, n: usize, d: usize) -> Result<Tensor> {
    let seq = x.dim(0)?;
    Ok(x.reshape((seq, n, d))?.transpose(0, 1)?.contiguous()?)
}

/// `[Hkv, ctx, d] → [Hkv·g, ctx, d]`, each KV head repeated `g` times in a row.
fn repeat_kv(x: &Tensor, g: usize) -> Result<Tensor> {
    if g == 1 {
        return Ok(x.clone());
    }
    let (n_kv, ctx, d) = x.dims3()?;
    Ok(x.unsqueeze(1)?
        .expand((n_kv, g, ctx, d))?
        .reshape((n_kv * g, ctx, d))?)
}

/// Rotates each pair of dimensions of `x: [n, seq, d]` by its position's angle.
fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, style: RopeStyle) -> Result<Tensor> {
    let x = x.unsqueeze(0)?; // candle's kernels take [batch, n, seq, d]
    let y = match style {
        RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, cos, sin)?,
        RopeStyle::HalfSplit => candle_nn::rotary_emb::rope(&x, cos, sin)?,
    };
    Ok(y.squeeze(0)?)
}

/// `cos(p·θ_i)` and `sin(p·θ_i)` for positions `past..past+seq`, given the inverse
/// frequencies θ_i: `[seq, d/2]` each.
pub(crate) fn rope_tables(
    inv_freq: &[f32],
    past: usize,
    seq: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let angles: Vec<f32> = (past..past + seq)
        .flat_map(|p| inv_freq.iter().map(move |f| p as f32 * f))
        .collect();
    let angles = Tensor::from_vec(angles, (seq, inv_freq.len()), device)?;
    Ok((angles.cos()?, angles.sin()?))
}

/// `[seq, past+seq]`: 0 where query `i` may see key `j` (j ≤ past + i and, with a sliding
/// `window`, past + i − j < window), −∞ elsewhere.
///
/// Gemma's local layers: with a window of 512, a query sees itself and the 511 positions before
/// it (llama.cpp's rule).
pub(crate) fn causal_mask(
    seq: usize,
    past: usize,
    window: Option<usize>,
    device: &Device,
) -> Result<Tensor> {
    let ctx = past + seq;
    let window = window.unwrap_or(usize::MAX);
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| {
            (0..ctx).map(move |j| {
                if j <= past + i && past + i - j < window {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (seq, ctx), device)?.to_dtype(DType::F32)?)
}
