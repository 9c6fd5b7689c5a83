//! The forward pass of a Llama model, top to bottom, in one place.
//!
//! Read it beside the lecture: tokens become vectors, each layer lets every position look at the
//! earlier ones (attention) and then think on its own (MLP), both added to a running *residual
//! stream*; the last vector of the stream is scored against every word of the vocabulary (logits).
//!
//! Shapes use: `seq` new tokens, `past` tokens already in the cache, `ctx = past + seq`,
//! `D = d_model`, `H = n_heads`, `Hkv = n_kv_heads`, `d = d_head`, `V = d_vocab`. Batch size is 1.

use candle_core::{DType, Device, Tensor};

use super::cache::KvCache;
use super::config::Config;
use super::trace::Trace;
use super::weights::{BlockWeights, Linear, RopeStyle, Weights};
use crate::error::Result;

/// Runs the model on `tokens` (appended after what `cache` holds) and returns logits.
/// `all_positions` = false returns only the last position's `[1, V]`, true all `[seq, V]`.
pub(crate) fn forward(
    config: &Config,
    w: &Weights,
    tokens: &[u32],
    cache: &mut KvCache,
    mut trace: Option<&mut Trace>,
    all_positions: bool,
) -> Result<Tensor> {
    let device = w.final_norm.device();
    let seq = tokens.len();
    let past = cache.len();
    let ids = Tensor::new(tokens, device)?; // [seq]

    // Token embeddings: one row of the table per token.
    let mut x = w.embed.embedding(&ids)?; // [seq, D]

    // Rotation angles for positions past..past+seq; the mask hides the future.
    let (cos, sin) = rope_tables(config, past, seq, device)?; // [seq, d/2] each
    let mask = causal_mask(seq, past, device)?; // [seq, ctx], 0 or -inf

    for (l, block) in w.blocks.iter().enumerate() {
        if let Some(t) = trace.as_deref_mut() {
            t.record(format!("blocks.{l}.resid_pre"), &x);
        }
        // Attention sub-layer, pre-norm: x + Attn(RMSNorm(x)).
        let h = rms_norm(&x, &block.attn_norm, config.rms_norm_eps)?; // [seq, D]
        let attn = attention(
            config,
            block,
            w.rope_style,
            &h,
            &cos,
            &sin,
            &mask,
            cache,
            l,
            trace.as_deref_mut(),
        )?; // [seq, D]
        x = (x + &attn)?;
        // MLP sub-layer, pre-norm: x + MLP(RMSNorm(x)).
        let h = rms_norm(&x, &block.mlp_norm, config.rms_norm_eps)?; // [seq, D]
        let mlp = swiglu_mlp(block, &h)?; // [seq, D]
        if let Some(t) = trace.as_deref_mut() {
            t.record(format!("blocks.{l}.attn_out"), &attn);
            t.record(format!("blocks.{l}.resid_mid"), &x);
            t.record(format!("blocks.{l}.mlp_out"), &mlp);
        }
        x = (x + mlp)?;
    }
    cache.advance(seq);
    if let Some(t) = trace.as_deref_mut() {
        t.record("final.resid".into(), &x);
    }

    // Final norm, then score every vocabulary entry: logits = RMSNorm(x) · W_outᵀ.
    let x = if all_positions {
        x
    } else {
        x.narrow(0, seq - 1, 1)?
    }; // [seq or 1, D]
    let x = rms_norm(&x, &w.final_norm, config.rms_norm_eps)?;
    Ok(w.lm_head.forward(&x)?) // [seq or 1, V]
}

/// Multi-head self-attention with grouped KV heads and rotary positions: `[seq, D] → [seq, D]`.
#[allow(clippy::too_many_arguments)]
fn attention(
    config: &Config,
    block: &BlockWeights,
    rope_style: RopeStyle,
    h: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    mask: &Tensor,
    cache: &mut KvCache,
    layer: usize,
    trace: Option<&mut Trace>,
) -> Result<Tensor> {
    let (seq, _) = h.dims2()?;
    let (n_h, n_kv, d) = (config.n_heads, config.n_kv_heads, config.d_head);

    // Project to queries, keys and values (one pass over h for the three), then split the width
    // into heads.
    let [q, k, v] = Linear::forward_many([&block.w_q, &block.w_k, &block.w_v], h)?;
    let q = split_heads(&q, n_h, d)?; // [H, seq, d]
    let k = split_heads(&k, n_kv, d)?; // [Hkv, seq, d]
    let v = split_heads(&v, n_kv, d)?; // [Hkv, seq, d]

    // Positions enter here, by rotating q and k (RoPE), not by adding a vector to the input.
    let q = rope(&q, cos, sin, rope_style)?; // [H, seq, d]
    let k = rope(&k, cos, sin, rope_style)?; // [Hkv, seq, d]

    // Keys and values of earlier tokens come from the cache.
    let (k, v) = cache.append(layer, &k, &v)?; // [Hkv, ctx, d] each
    let ctx = k.dim(1)?;

    // Grouped-query attention: the g = H / Hkv query heads that share a KV head are stacked
    // (heads kv·g … kv·g + g − 1), so one product serves them all and K, V are never copied.
    let g = n_h / n_kv;

    let (heads, pattern) = if seq > 1 {
        let q_grouped = q.reshape((n_kv, g * seq, d))?; // [Hkv, g·seq, d]
                                                        // softmax(Q Kᵀ / √d + mask) V, per head.
        let scores = (q_grouped.matmul(&k.t()?)? / (d as f64).sqrt())?; // [Hkv, g·seq, ctx]
        let scores = scores.reshape((n_h, seq, ctx))?.broadcast_add(mask)?; // [H, seq, ctx]
        let pattern = candle_nn::ops::softmax_last_dim(&scores)?; // [H, seq, ctx], rows sum to 1
        let heads = pattern.reshape((n_kv, g * seq, ctx))?.matmul(&v)?; // [Hkv, g·seq, d]
        (heads.reshape((n_h, seq, d))?, pattern) // [H, seq, d], [H, seq, ctx]
    } else {
        // One new token while generating: the same formula (no mask: the newest token sees
        // every position), fused into one loop, as the separate operations cost more than
        // their arithmetic at this size.
        super::single_token::attention(&q, &k, &v)? // [H, 1, d], [H, 1, ctx]
    };

    // Concatenate the heads and mix them with W_O.
    let concat = heads.transpose(0, 1)?.reshape((seq, n_h * d))?; // [seq, H·d]
    let out = block.w_o.forward(&concat)?; // [seq, D]

    if let Some(t) = trace {
        t.record(format!("blocks.{layer}.attn.pattern"), &pattern);
        if t.options.qkv {
            t.record(format!("blocks.{layer}.attn.q"), &q);
            t.record(format!("blocks.{layer}.attn.k"), &repeat_kv(&k, g)?);
            t.record(format!("blocks.{layer}.attn.v"), &repeat_kv(&v, g)?);
        }
    }
    Ok(out)
}

/// SwiGLU MLP: `W_down · (SiLU(W_gate · x) ⊙ W_up · x)`, `[seq, D] → [seq, D]`.
fn swiglu_mlp(block: &BlockWeights, h: &Tensor) -> Result<Tensor> {
    let [gate, up] = Linear::forward_many([&block.w_gate, &block.w_up], h)?; // [seq, d_mlp] each
    let gate = candle_nn::ops::silu(&gate)?;
    Ok(block.w_down.forward(&(gate * up)?)?) // [seq, D]
}

/// RMSNorm: `x / sqrt(mean(x²) + ε) · g`, per row. Llama's normalisation: no mean subtracted, no bias.
pub(crate) fn rms_norm(x: &Tensor, gain: &Tensor, eps: f64) -> Result<Tensor> {
    Ok(candle_nn::ops::rms_norm(x, gain, eps as f32)?)
}

/// `[seq, n·d] → [n, seq, d]`.
fn split_heads(x: &Tensor, n: usize, d: usize) -> Result<Tensor> {
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

/// `cos(p·θ_i)` and `sin(p·θ_i)` for positions `past..past+seq`: `[seq, d/2]` each.
pub(crate) fn rope_tables(
    config: &Config,
    past: usize,
    seq: usize,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let inv_freq = config.rope_inv_freqs();
    let angles: Vec<f32> = (past..past + seq)
        .flat_map(|p| inv_freq.iter().map(move |f| p as f32 * f))
        .collect();
    let angles = Tensor::from_vec(angles, (seq, inv_freq.len()), device)?;
    Ok((angles.cos()?, angles.sin()?))
}

/// `[seq, past+seq]`: 0 where query `i` may see key `j` (j ≤ past + i), −∞ elsewhere.
pub(crate) fn causal_mask(seq: usize, past: usize, device: &Device) -> Result<Tensor> {
    let ctx = past + seq;
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| {
            (0..ctx).map(move |j| {
                if j <= past + i {
                    0.0
                } else {
                    f32::NEG_INFINITY
                }
            })
        })
        .collect();
    Ok(Tensor::from_vec(mask, (seq, ctx), device)?.to_dtype(DType::F32)?)
}
