//! The lecture's building blocks written from scratch, as its equations read. Lessons use them and
//! students re-implement them; the model does not depend on them, and tests prove they agree with
//! what the model computes.
//!
//! Shapes: `n` queries, `m` keys, `d` width of a query/key, `dv` width of a value, `D` model width.

use candle_core::{DType, Device, Tensor, D};

use crate::error::{Error, Result};

/// Softmax over the last dimension, `exp(x_i − max) / Σ_j exp(x_j − max)` per row, for a tensor
/// of any layout: candle's kernel (`candle_nn::ops::softmax_last_dim`) refuses a transposed or
/// sliced tensor ("input has to be contiguous"), a message that says nothing about the maths; this
/// one makes the rows contiguous first. The prelude exports this one.
///
/// ```
/// use llm_lab::prelude::*;
/// let scores = Tensor::new(&[[1f32, 2.0], [3.0, 4.0]], &Device::Cpu)?;
/// let by_columns = softmax_last_dim(&scores.t()?)?; // a transposed view: rows are columns
/// let rows = by_columns.to_vec2::<f32>()?;
/// assert!((rows[0][0] + rows[0][1] - 1.0).abs() < 1e-6);
/// assert!(rows[0][1] > rows[0][0]); // exp(3) > exp(1)
/// # Ok::<(), llm_lab::Error>(())
/// ```
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    candle_nn::ops::softmax_last_dim(&x.contiguous()?)
}

/// Attention weights `softmax(Q Kᵀ / √d)`: `[n, d] × [m, d] → [n, m]`, each row sums to 1.
/// With `causal`, query `i` only sees keys `0..=i` (the future gets weight 0).
pub fn attention_weights(q: &Tensor, k: &Tensor, causal: bool) -> Result<Tensor> {
    let d = q.dim(D::Minus1)?;
    let scores = (q.matmul(&k.t()?)? / (d as f64).sqrt())?; // [n, m]
    let scores = if causal {
        let (n, m) = scores.dims2()?;
        let mask: Vec<f32> = (0..n)
            .flat_map(|i| {
                (0..m).map(move |j| {
                    if j + n <= i + m {
                        0.0
                    } else {
                        f32::NEG_INFINITY
                    }
                })
            })
            .collect();
        scores.broadcast_add(&Tensor::from_vec(mask, (n, m), q.device())?)?
    } else {
        scores
    };
    Ok(softmax_last_dim(&scores)?)
}

/// Scaled dot-product attention `softmax(Q Kᵀ / √d) V`: `[n, d], [m, d], [m, dv] → [n, dv]`.
///
/// ```
/// use candle_core::{Device, Tensor};
/// let q = Tensor::new(&[[1f32, 0.0]], &Device::Cpu)?;
/// let k = Tensor::new(&[[1f32, 0.0], [0.0, 1.0]], &Device::Cpu)?;
/// let v = Tensor::new(&[[10f32], [20.0]], &Device::Cpu)?;
/// let out = llm_lab::scratch::attention(&q, &k, &v, false)?;
/// let x = out.to_vec2::<f32>()?[0][0];
/// assert!(x > 10.0 && x < 15.0); // closer to the value of the matching key
/// # Ok::<(), llm_lab::Error>(())
/// ```
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, causal: bool) -> Result<Tensor> {
    Ok(attention_weights(q, k, causal)?.matmul(v)?)
}

/// One attention head's projections: `W_Q, W_K: [D, d]`, `W_V: [D, dv]`.
#[derive(Debug, Clone)]
pub struct HeadWeights {
    pub w_q: Tensor,
    pub w_k: Tensor,
    pub w_v: Tensor,
}

/// Multi-head self-attention as the lecture writes it: each head `h` computes
/// `attention(X W_Q⁽ʰ⁾, X W_K⁽ʰ⁾, X W_V⁽ʰ⁾)`, the heads are concatenated (`N × H·dv`) and multiplied
/// by `W_O` (`H·dv × D`): `[N, D] → [N, D]`.
pub fn multi_head_attention(
    x: &Tensor,
    heads: &[HeadWeights],
    w_o: &Tensor,
    causal: bool,
) -> Result<Tensor> {
    if heads.is_empty() {
        return Err(Error::invalid(
            "multi-head attention needs at least one head",
        ));
    }
    let outs = heads
        .iter()
        .map(|h| {
            attention(
                &x.matmul(&h.w_q)?,
                &x.matmul(&h.w_k)?,
                &x.matmul(&h.w_v)?,
                causal,
            )
        })
        .collect::<Result<Vec<_>>>()?; // H × [N, dv]
    let concat = Tensor::cat(&outs, 1)?; // [N, H·dv]
    Ok(concat.matmul(w_o)?) // [N, D]
}

/// Layer normalisation over the last dimension, without gain or bias:
/// `(x − mean) / sqrt(var + ε)`, with the population variance (÷ n).
pub fn layer_norm(x: &Tensor, eps: f64) -> Result<Tensor> {
    let mean = x.mean_keepdim(D::Minus1)?;
    let centered = x.broadcast_sub(&mean)?;
    let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
    Ok(centered.broadcast_div(&(var + eps)?.sqrt()?)?)
}

/// RMS normalisation (Llama's): `x / sqrt(mean(x²) + ε) · g`.
pub fn rms_norm(x: &Tensor, gain: &Tensor, eps: f64) -> Result<Tensor> {
    let rms = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    Ok(x.broadcast_div(&rms)?.broadcast_mul(gain)?)
}

/// The lecture's residual block: `Z = Norm(Y + X)` where `Y = sublayer(X)` (post-norm, as in the
/// original transformer; Llama normalises *before* the sublayer instead).
pub fn residual_post_norm(
    x: &Tensor,
    sublayer: impl Fn(&Tensor) -> Result<Tensor>,
    eps: f64,
) -> Result<Tensor> {
    layer_norm(&(sublayer(x)? + x)?, eps)
}

/// Llama's order: `X + sublayer(Norm(X))` (pre-norm).
pub fn residual_pre_norm(
    x: &Tensor,
    sublayer: impl Fn(&Tensor) -> Result<Tensor>,
    norm: impl Fn(&Tensor) -> Result<Tensor>,
) -> Result<Tensor> {
    Ok((x + sublayer(&norm(x)?)?)?)
}

/// The lecture's MLP: two layers with a ReLU between, `max(0, X W₁) W₂`, which keeps the width:
/// `W₁: [D, F]`, `W₂: [F, D]`, `[N, D] → [N, D]`. (Llama and Gemma use a gated MLP instead.)
#[derive(Debug, Clone)]
pub struct Mlp {
    pub w_1: Tensor,
    pub w_2: Tensor,
}

impl Mlp {
    /// `max(0, X W₁) W₂`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(x.matmul(&self.w_1)?.relu()?.matmul(&self.w_2)?)
    }
}

/// The lecture's transformer block, post-norm as it writes it: `Z = LN(MHA(X) + X)`, then
/// `X̃ = LN(MLP(Z) + Z)`, with LayerNorm without gain or bias and attention without a mask.
/// Llama and Gemma normalise before each sublayer instead (pre-norm, with RMSNorm).
///
/// ```
/// use llm_lab::scratch::{self, HeadWeights, Mlp};
/// let m = |r, c, s| scratch::random_matrix(r, c, s);
/// let x = m(3, 4, 1)?;
/// let heads = vec![HeadWeights { w_q: m(4, 2, 2)?, w_k: m(4, 2, 3)?, w_v: m(4, 2, 4)? }];
/// let mlp = Mlp { w_1: m(4, 8, 5)?, w_2: m(8, 4, 6)? };
/// let out = scratch::transformer_block(&x, &heads, &m(2, 4, 7)?, &mlp, 1e-5)?;
/// assert_eq!(out.dims(), &[3, 4]); // the width is kept, so blocks stack
/// # Ok::<(), llm_lab::Error>(())
/// ```
pub fn transformer_block(
    x: &Tensor,
    heads: &[HeadWeights],
    w_o: &Tensor,
    mlp: &Mlp,
    eps: f64,
) -> Result<Tensor> {
    let z = residual_post_norm(x, |x| multi_head_attention(x, heads, w_o, false), eps)?;
    residual_post_norm(&z, |z| mlp.forward(z), eps)
}

/// Sinusoidal positional encoding `[n, d]`: `PE[p, 2i] = sin(p / 10000^(2i/d))`,
/// `PE[p, 2i+1] = cos(p / 10000^(2i/d))`.
///
/// ```
/// let pe = llm_lab::scratch::sinusoidal_positions(4, 6)?.to_vec2::<f32>()?;
/// assert_eq!(pe[0], vec![0.0, 1.0, 0.0, 1.0, 0.0, 1.0]); // position 0: sin 0 = 0, cos 0 = 1
/// assert!((pe[1][0] - 1f32.sin()).abs() < 1e-6);
/// # Ok::<(), llm_lab::Error>(())
/// ```
pub fn sinusoidal_positions(n: usize, d: usize) -> Result<Tensor> {
    let mut v = Vec::with_capacity(n * d);
    for p in 0..n {
        for j in 0..d {
            let i = (j / 2) as f64;
            let angle = p as f64 / 10_000f64.powf(2.0 * i / d as f64);
            v.push(if j % 2 == 0 { angle.sin() } else { angle.cos() } as f32);
        }
    }
    Ok(Tensor::from_vec(v, (n, d), &Device::Cpu)?)
}

/// A random `[rows, cols]` matrix with a fixed seed, for examples and checks.
pub fn random_matrix(rows: usize, cols: usize, seed: u64) -> Result<Tensor> {
    let mut rng = crate::sampling::Rng::new(seed);
    let v: Vec<f32> = (0..rows * cols)
        .map(|_| (rng.next_f64() * 2.0 - 1.0) as f32)
        .collect();
    Ok(Tensor::from_vec(v, (rows, cols), &Device::Cpu)?.to_dtype(DType::F32)?)
}
