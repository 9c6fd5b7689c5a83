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

use super::cache::KvCache;
use super::config::{Activation, Config};
use super::intervene::Interventions;
use super::trace::{Hook, Trace};
use super::weights::{BlockWeights, Linear, RopeStyle, Weights};
use crate::error::Result;

/// Which positions' logits a forward pass returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Positions {
    /// `[seq, V]`: every position (training's view, the logit lens).
    All,
    /// `[1, V]`: only the last (generation).
    Last,
}

/// Runs the model on `tokens` (appended after what `cache` holds) and returns logits.
pub(crate) fn forward(
    config: &Config,
    w: &Weights,
    tokens: &[u32],
    cache: &mut KvCache,
    mut trace: Option<&mut Trace>,
    positions: Positions,
    iv: &Interventions,
) -> Result<Tensor> {
    let device = w.final_norm.device();
    let seq = tokens.len();
    let past = cache.len();

    // Token embeddings: one row of the table per token.
    let mut x = embed(config, w, tokens)?; // [seq, D]
    if let Some(t) = trace.as_deref_mut() {
        t.record(Hook::Embed, &x);
    }

    // Rotation angles for positions past..past+seq; the mask hides the future.
    let (cos, sin) = rope_tables(&config.rope_inv_freqs(), past, seq, device)?; // [seq, d/2] each
    let mask = causal_mask(seq, past, None, device)?; // [seq, ctx], 0 or -inf

    for (l, block) in w.blocks.iter().enumerate() {
        if let Some(t) = trace.as_deref_mut() {
            t.record(Hook::ResidPre(l), &x);
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
            iv,
        )?; // [seq, D]
        let attn = iv.attention_out(l, attn)?; // zeros if this layer's attention is ablated
        x = (x + &attn)?;
        // MLP sub-layer, pre-norm: x + MLP(RMSNorm(x)).
        let h = rms_norm(&x, &block.mlp_norm, config.rms_norm_eps)?; // [seq, D]
        let mlp = gated_mlp(block, &h, config.mlp_activation)?; // [seq, D]
        let mlp = iv.mlp_out(l, mlp)?;
        if let Some(t) = trace.as_deref_mut() {
            t.record(Hook::AttnOut(l), &attn);
            t.record(Hook::ResidMid(l), &x);
            t.record(Hook::MlpOut(l), &mlp);
        }
        x = (x + mlp)?;
    }
    finish(config, w, x, cache, trace, positions) // [seq or 1, V]
}

/// The end of every architecture's pass: the cache takes the new positions, the last stream is
/// recorded, and the positions asked for are scored against the vocabulary.
pub(crate) fn finish(
    config: &Config,
    w: &Weights,
    x: Tensor, // [seq, D]
    cache: &mut KvCache,
    trace: Option<&mut Trace>,
    positions: Positions,
) -> Result<Tensor> {
    let seq = x.dim(0)?;
    cache.advance(seq);
    if let Some(t) = trace {
        t.record(Hook::FinalResid, &x);
    }
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
/// `cos`, `sin` and `mask` are those of this layer (Gemma's local and global layers differ).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attention(
    config: &Config,
    block: &BlockWeights,
    rope_style: RopeStyle,
    h: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    mask: &Tensor,
    cache: &mut KvCache,
    layer: usize,
    mut trace: Option<&mut Trace>,
    iv: &Interventions,
) -> Result<Tensor> {
    let (seq, _) = h.dims2()?;
    let (n_h, n_kv, d) = (config.n_heads, config.n_kv_heads, config.d_head);

    // Project to queries, keys and values (one pass over h for the three), then split the width
    // into heads.
    let [q, k, v] = Linear::forward_many([&block.w_q, &block.w_k, &block.w_v], h)?;
    let q = split_heads(&q, n_h, d)?; // [H, seq, d]
    let k = split_heads(&k, n_kv, d)?; // [Hkv, seq, d]
    let v = split_heads(&v, n_kv, d)?; // [Hkv, seq, d]
                                       // Gemma: each query and key head is RMS-normalised over its d dimensions (own gain per
                                       // dimension, shared by the heads) before RoPE, which keeps the scores q·k in range.
    let (q, k) = match (&block.q_norm, &block.k_norm) {
        (Some(q_gain), Some(k_gain)) => (
            rms_norm(&q, q_gain, config.rms_norm_eps)?, // [H, seq, d]
            rms_norm(&k, k_gain, config.rms_norm_eps)?, // [Hkv, seq, d]
        ),
        _ => (q, k),
    };
    let g = n_h / n_kv;
    if let Some(t) = trace.as_deref_mut().filter(|t| t.wants(Hook::Q(layer))) {
        t.record(Hook::Q(layer), &q);
        t.record(Hook::K(layer), &repeat_kv(&k, g)?);
    }

    // Positions enter here, by rotating q and k (RoPE), not by adding a vector to the input.
    let q = rope(&q, cos, sin, rope_style)?; // [H, seq, d]
    let k = rope(&k, cos, sin, rope_style)?; // [Hkv, seq, d]

    // Keys and values of earlier tokens come from the cache.
    let (k, v) = cache.append(layer, &k, &v)?; // [Hkv, ctx, d] each

    let keep_pattern = trace.as_deref().is_some();
    let window = config.window(layer);
    let (heads, pattern) = attend(&q, &k, &v, mask, window, keep_pattern)?; // [H, seq, d], [H, seq, ctx]

    // Ablated heads (see `intervene`) give zeros here, so W_O mixes nothing of them in.
    let heads = iv.apply_to_heads(layer, heads)?; // [H, seq, d]

    // Concatenate the heads and mix them with W_O.
    let concat = heads.transpose(0, 1)?.reshape((seq, n_h * d))?; // [seq, H·d]
    let out = block.w_o.forward(&concat)?; // [seq, D]

    if let Some(t) = trace {
        if let Some(p) = &pattern {
            t.record(Hook::Pattern(layer), p);
        }
        if t.wants(Hook::RotQ(layer)) {
            t.record(Hook::RotQ(layer), &q);
            t.record(Hook::RotK(layer), &repeat_kv(&k, g)?);
            t.record(Hook::V(layer), &repeat_kv(&v, g)?);
            t.record(Hook::Z(layer), &heads);
        }
    }
    Ok(out)
}

/// `softmax(Q Kᵀ / √d + mask) V` for every head: `q: [H, seq, d]`, `k, v: [Hkv, ctx, d]`,
/// `mask: [seq, ctx]` → (`heads: [H, seq, d]`, `pattern: [H, seq, ctx]` if `keep_pattern`).
/// `window`: a local layer's sliding window, which `mask` already applies on a prompt.
fn attend(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    mask: &Tensor,
    window: Option<usize>,
    keep_pattern: bool,
) -> Result<(Tensor, Option<Tensor>)> {
    let (n_h, seq, _) = q.dims3()?;
    let (n_kv, ctx, _) = k.dims3()?;
    let g = n_h / n_kv;
    if seq > 1 {
        // Queries in chunks, so the score matrix of a long prompt never exists all at once:
        // memory grows linearly with the prompt, not with its square.
        let mut heads = Vec::new();
        let mut patterns = Vec::new();
        for start in (0..seq).step_by(QUERY_CHUNK) {
            let n = QUERY_CHUNK.min(seq - start);
            let q = q.narrow(1, start, n)?; // [H, n, d]
            let mask = mask.narrow(0, start, n)?; // [n, ctx]
            let (h, p) = grouped_attention(&q, k, v, &mask, g)?; // [H, n, d], [H, n, ctx]
            heads.push(h);
            if keep_pattern {
                patterns.push(p);
            }
        }
        let heads = Tensor::cat(&heads, 1)?; // [H, seq, d]
        let pattern = if keep_pattern {
            Some(Tensor::cat(&patterns, 1)?) // [H, seq, ctx]
        } else {
            None
        };
        return Ok((heads, pattern));
    }
    // One new token while generating: the same formula (no mask: the newest token sees every
    // position), fused into one loop, as the separate operations cost more than their
    // arithmetic at this size.
    // Gemma: on a local layer the newest token sees only the last `window` positions, so
    // only those keys and values are read.
    let seen = window.map_or(ctx, |w| w.min(ctx));
    let (k, v) = (
        k.narrow(1, ctx - seen, seen)?,
        v.narrow(1, ctx - seen, seen)?,
    ); // [Hkv, seen, d]
    let (h, p) = super::single_token::attention(q, &k, &v)?; // [H, 1, d], [H, 1, seen]
    let p = if seen < ctx && keep_pattern {
        // The positions outside the window get probability 0, so that a pattern always has
        // one column per position.
        let hidden = Tensor::zeros((n_h, 1, ctx - seen), p.dtype(), p.device())?;
        Tensor::cat(&[&hidden, &p], 2)? // [H, 1, ctx]
    } else {
        p
    };
    Ok((h, Some(p)))
}

/// Rows of queries per attention product on a prompt: bounds the score matrix to
/// `H × QUERY_CHUNK × ctx` floats.
const QUERY_CHUNK: usize = 256;

/// `softmax(Q Kᵀ / √d + mask) V` for `n` queries against `ctx` keys.
///
/// Grouped-query attention: the g = H / Hkv query heads that share a KV head are stacked
/// (heads kv·g … kv·g + g − 1), so one product serves them all and K, V are never copied.
fn grouped_attention(
    q: &Tensor,    // [H, n, d]
    k: &Tensor,    // [Hkv, ctx, d]
    v: &Tensor,    // [Hkv, ctx, d]
    mask: &Tensor, // [n, ctx]
    g: usize,
) -> Result<(Tensor, Tensor)> {
    let (n_h, n, d) = q.dims3()?;
    let (n_kv, ctx, _) = k.dims3()?;
    let q_grouped = q.contiguous()?.reshape((n_kv, g * n, d))?; // [Hkv, g·n, d]
    let scores = (q_grouped.matmul(&k.t()?)? / (d as f64).sqrt())?; // [Hkv, g·n, ctx]
    let scores = scores.reshape((n_h, n, ctx))?.broadcast_add(mask)?; // [H, n, ctx]
    let pattern = candle_nn::ops::softmax_last_dim(&scores)?; // [H, n, ctx], rows sum to 1
    let heads = pattern.reshape((n_kv, g * n, ctx))?.matmul(v)?; // [Hkv, g·n, d]
    Ok((heads.reshape((n_h, n, d))?, pattern)) // [H, n, d], [H, n, ctx]
}

/// Gated MLP: `W_down · (act(W_gate · x) ⊙ W_up · x)`, `[seq, D] → [seq, D]`. Llama's act is
/// SiLU (SwiGLU); Gemma's is GELU with the tanh approximation (GeGLU).
pub(crate) fn gated_mlp(block: &BlockWeights, h: &Tensor, act: Activation) -> Result<Tensor> {
    let [gate, up] = Linear::forward_many([&block.w_gate, &block.w_up], h)?; // [seq, d_mlp] each
    let gate = match act {
        Activation::Silu => candle_nn::ops::silu(&gate)?,
        Activation::GeluTanh => gelu_tanh(&gate)?,
    };
    Ok(block.w_down.forward(&(gate * up)?)?) // [seq, D]
}

/// GELU, tanh approximation: `½·x·(1 + tanh(u))`, `u = √(2/π)·(x + 0.044715·x³)`, written as
/// `x·σ(2u)` (the same number: `1 + tanh(u) = 2σ(2u)`), with an `exp` the compiler vectorises:
/// a library `tanhf` per element cost more than the MLP's products on a prompt.
pub(crate) fn gelu_tanh(x: &Tensor) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let mut v = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    const K: f32 = 0.797_884_6; // √(2/π)
    for x in v.iter_mut() {
        let u = K * (*x + 0.044_715 * *x * *x * *x);
        // Below u = −44, σ(2u) < 10⁻³⁸: the limit, 0, also for an x so large that x·σ is not.
        *x = if u < -44.0 {
            0.0
        } else {
            *x / (1.0 + exp(-2.0 * u))
        };
    }
    Ok(Tensor::from_vec(v, dims, x.device())?)
}

/// `eˣ` within 2 ulp, in operations that vectorise: `eˣ = 2ⁿ·eᶠ` with `n = round(x·log₂e)`,
/// `|f| ≤ ln2/2`, `eᶠ` by its Taylor series to degree 7. Clamped to f32's normal range.
#[inline(always)]
fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    // Adding and subtracting 1.5·2²³ rounds to an integer without a (slow to vectorise) call.
    let n = (x * std::f32::consts::LOG2_E + 12_582_912.0) - 12_582_912.0;
    // ln 2 in two parts, so that n·ln2 is subtracted exactly.
    let f = x - n * 0.693_145_75 - n * 1.428_606_8e-6;
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0
                    + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0 + f / 5040.0))))));
    p * f32::from_bits(((n as i32 + 127) as u32) << 23)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_over_f32s_range() {
        let mut worst = 0f64;
        for i in -870_000..=880_000 {
            let x = i as f32 * 1e-4;
            let (got, want) = (exp(x) as f64, (x as f64).exp());
            worst = worst.max((got - want).abs() / want);
        }
        assert!(worst < 2.5e-7, "relative error {worst}");
        assert!(exp(-1000.0) > 0.0 && exp(1000.0).is_finite());
    }

    #[test]
    fn gelu_agrees_with_the_tanh_formula() {
        let xs: Vec<f32> = (-20_000..=20_000)
            .map(|i| i as f32 * 1e-3)
            .chain([-1e30, 1e30, 0.0])
            .collect();
        let got = gelu_tanh(&Tensor::new(xs.as_slice(), &Device::Cpu).unwrap()).unwrap();
        for (&x, g) in xs.iter().zip(got.to_vec1::<f32>().unwrap()) {
            let x64 = x as f64;
            let u = (2.0 / std::f64::consts::PI).sqrt() * (x64 + 0.044715 * x64.powi(3));
            let want = 0.5 * x64 * (1.0 + u.tanh());
            assert!(
                (g as f64 - want).abs() <= 1e-6 * want.abs().max(1e-3),
                "gelu({x}) = {g}, not {want}"
            );
        }
    }
}
