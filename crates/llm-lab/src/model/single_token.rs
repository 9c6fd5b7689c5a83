//! Attention for one new token: the step every generated token takes, in one fused loop.
//!
//! The formula is the one `forward.rs` spells with tensor operations, `softmax(q Kᵀ / √d) V` per
//! head, with no mask because a single newest token may see every position. At this size
//! (one query row per head) the two batched matrix products, the scaling and the softmax cost
//! more in dispatch and allocation than in arithmetic, so this helper does them in one pass over
//! the cached keys and values, reading them in place.

use candle_core::Tensor;

use crate::error::Result;

/// `q: [H, 1, d]`, `k, v: [Hkv, ctx, d]` (views of the cache are fine) →
/// (`heads: [H, 1, d]`, `pattern: [H, 1, ctx]`). Query head `h` uses KV head `h / (H / Hkv)`.
pub(crate) fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<(Tensor, Tensor)> {
    let (n_h, seq, d) = q.dims3()?;
    let (n_kv, ctx, _) = k.dims3()?;
    assert_eq!(seq, 1, "single-token attention takes one query per head");
    let group = n_h / n_kv;
    let q = q.flatten_all()?.to_vec1::<f32>()?;
    let scale = 1.0 / (d as f32).sqrt();
    let mut pattern = vec![0f32; n_h * ctx];
    let mut heads = vec![0f32; n_h * d];
    with_rows(k, |keys| {
        for (h, scores) in pattern.chunks_exact_mut(ctx).enumerate() {
            let q_h = &q[h * d..(h + 1) * d];
            for (j, s) in scores.iter_mut().enumerate() {
                *s = dot(q_h, keys(h / group, j)) * scale;
            }
            softmax_in_place(scores);
        }
    })?;
    with_rows(v, |values| {
        for (h, out) in heads.chunks_exact_mut(d).enumerate() {
            for (j, &p) in pattern[h * ctx..(h + 1) * ctx].iter().enumerate() {
                for (o, &x) in out.iter_mut().zip(values(h / group, j)) {
                    *o += p * x;
                }
            }
        }
    })?;
    Ok((
        Tensor::from_vec(heads, (n_h, 1, d), &candle_core::Device::Cpu)?,
        Tensor::from_vec(pattern, (n_h, 1, ctx), &candle_core::Device::Cpu)?,
    ))
}

/// Calls `f` with an accessor for row `(head, position)` of a `[heads, ctx, d]` CPU tensor whose
/// rows are contiguous, without copying it.
fn with_rows<R>(
    t: &Tensor,
    f: impl for<'a> FnOnce(&'a dyn Fn(usize, usize) -> &'a [f32]) -> R,
) -> Result<R> {
    let t = if t.stride()[2] == 1 {
        t.clone()
    } else {
        t.contiguous()?
    };
    let d = t.dim(2)?;
    Ok(super::with_cpu_f32(&t, |data, layout| {
        let (start, stride) = (layout.start_offset(), layout.stride());
        let row = |h: usize, j: usize| &data[start + h * stride[0] + j * stride[1]..][..d];
        f(&row)
    })?)
}

/// Dot product with eight independent sums, which the compiler turns into SIMD.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let split = a.len() - a.len() % 8;
    for (x, y) in a[..split].chunks_exact(8).zip(b[..split].chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = a[split..].iter().zip(&b[split..]).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `exp(s − max) / Σ exp(s − max)`: the max keeps every exponent ≤ 0, so nothing overflows.
fn softmax_in_place(s: &mut [f32]) {
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in s.iter_mut() {
        *x = (*x - max).exp();
        sum += *x;
    }
    for x in s.iter_mut() {
        *x /= sum;
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Tensor};

    /// The same formula with tensor operations, as `forward.rs` writes it.
    fn reference(q: &Tensor, k: &Tensor, v: &Tensor, group: usize) -> (Tensor, Tensor) {
        let (n_kv, ctx, d) = k.dims3().unwrap();
        let q = q.reshape((n_kv, group, d)).unwrap();
        let scores = (q.matmul(&k.t().unwrap()).unwrap() / (d as f64).sqrt()).unwrap();
        let pattern = candle_nn::ops::softmax_last_dim(&scores).unwrap();
        let heads = pattern.matmul(v).unwrap();
        (
            heads.reshape((n_kv * group, 1, d)).unwrap(),
            pattern.reshape((n_kv * group, 1, ctx)).unwrap(),
        )
    }

    #[test]
    fn agrees_with_the_tensor_formula_on_cache_views() {
        let dev = Device::Cpu;
        for (n_h, n_kv, ctx, d) in [(9, 3, 17, 64), (4, 4, 1, 8), (6, 2, 40, 12)] {
            let q = Tensor::randn(0f32, 1.0, (n_h, 1, d), &dev).unwrap();
            // Views into bigger buffers, as the KV cache hands them out.
            let k = Tensor::randn(0f32, 2.0, (n_kv, ctx + 5, d), &dev)
                .unwrap()
                .narrow(1, 0, ctx)
                .unwrap();
            let v = Tensor::randn(0f32, 1.0, (n_kv, ctx + 5, d), &dev)
                .unwrap()
                .narrow(1, 0, ctx)
                .unwrap();
            let (heads, pattern) = super::attention(&q, &k, &v).unwrap();
            let (want_heads, want_pattern) = reference(
                &q,
                &k.contiguous().unwrap(),
                &v.contiguous().unwrap(),
                n_h / n_kv,
            );
            let diff = |a: &Tensor, b: &Tensor| crate::compare::max_abs_diff(a, b).unwrap();
            assert!(
                diff(&heads, &want_heads) < 1e-5,
                "heads differ for {n_h}/{n_kv} heads, ctx {ctx}"
            );
            assert!(
                diff(&pattern, &want_pattern) < 1e-6,
                "pattern differs for {n_h}/{n_kv} heads, ctx {ctx}"
            );
        }
    }
}
