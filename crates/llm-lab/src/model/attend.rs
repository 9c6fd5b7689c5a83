//! The attention product `softmax(Q Kᵀ / √d + mask) V`, computed the way the machine wants it:
//! a prompt's queries in chunks (the score matrix of a long prompt never exists all at once), the
//! g query heads that share a KV head in one product, and one new token in a fused loop
//! (`single_token`). The forward pass calls [`attend`] and reads like the lecture.

use candle_core::Tensor;

use crate::error::Result;

/// `softmax(Q Kᵀ / √d + mask) V` for every head: `q: [H, seq, d]`, `k, v: [Hkv, ctx, d]`,
/// `mask: [seq, ctx]` → (`heads: [H, seq, d]`, `pattern: [H, seq, ctx]` if `keep_pattern`).
/// `window`: a local layer's sliding window, which `mask` already applies on a prompt.
pub(crate) fn attend(
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

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn random(dims: &[usize], seed: u64) -> Tensor {
        let mut rng = crate::rng::Rng::new(seed);
        let n = dims.iter().product();
        let v: Vec<f32> = (0..n).map(|_| rng.next_f64() as f32 - 0.5).collect();
        Tensor::from_vec(v, dims, &Device::Cpu).unwrap()
    }

    /// A prompt longer than a chunk gives, chunk by chunk, what one product over all its
    /// queries gives; the last query alone (the single-token path) gives that product's last row.
    #[test]
    fn chunks_and_the_single_token_path_agree_with_one_product() {
        let (n_h, n_kv, d) = (4, 2, 8);
        let seq = QUERY_CHUNK + 44;
        let (q, k, v) = (
            random(&[n_h, seq, d], 1),
            random(&[n_kv, seq, d], 2),
            random(&[n_kv, seq, d], 3),
        );
        let mask = crate::model::forward::causal_mask(seq, 0, None, &Device::Cpu).unwrap();
        let (whole, whole_p) = grouped_attention(&q, &k, &v, &mask, n_h / n_kv).unwrap();
        let (chunked, chunked_p) = attend(&q, &k, &v, &mask, None, true).unwrap();
        let diff = |a: &Tensor, b: &Tensor| {
            let d = (a - b).unwrap().abs().unwrap().flatten_all().unwrap();
            d.max(0).unwrap().to_scalar::<f32>().unwrap()
        };
        assert!(diff(&whole, &chunked) < 1e-5);
        assert!(diff(&whole_p, &chunked_p.unwrap()) < 1e-6);
        let last = q.narrow(1, seq - 1, 1).unwrap();
        let one_mask = mask.narrow(0, seq - 1, 1).unwrap();
        let (one, _) = attend(&last, &k, &v, &one_mask, None, false).unwrap();
        assert!(diff(&one, &whole.narrow(1, seq - 1, 1).unwrap()) < 1e-5);
    }
}
