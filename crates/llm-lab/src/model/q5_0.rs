//! Q5_0 weight matrices with a vectorised CPU product (most of Gemma 3's layer weights).
//!
//! Q5_0 (llama.cpp's 5-bit format) stores each run of 32 weights as a scale `d` (f16), the fifth
//! bits of the 32 codes (`qh`, 32 bits) and their low four bits (16 bytes): `w = d·(q − 16)`.
//! candle 0.11 multiplies it with a scalar loop that extracts every bit on its own. This module
//! keeps the file's 22 bytes per block and multiplies them as llama.cpp defines the format:
//! activations rounded to Q8_0 (32 codes and an f16 scale per block), then
//!
//! `Σ w·x ≈ Σ_blocks d_w·d_x·Σ (q_w − 16)·q_x`.
//!
//! A block's fifth bits are spread into bytes with a 256-entry table (eight at a time), so the
//! 32 codes come out of a few 64-bit operations and the integer dot product vectorises; with AVX2
//! the same code is compiled a second time for it and picked at run time. Rows are shared out
//! among candle's worker threads. Results equal the definition up to the order of float additions.

use super::q4_1::{f16_to_f32, SharedRows};

/// Weights per block.
pub const BLOCK: usize = 32;
/// Bytes per stored block: an f16 scale, four bytes of fifth bits, 16 bytes of low nibbles.
const BLOCK_BYTES: usize = 22;

/// A `[rows, cols]` matrix of Q5_0 blocks, row-major, as three parallel arrays.
#[derive(Debug, Clone)]
pub struct Q5_0Matrix {
    rows: usize,
    cols: usize,
    /// Per block: the scale `d` as f16 bits.
    d: Vec<u16>,
    /// Per block: bit `j` is the fifth bit of code `j`.
    qh: Vec<u32>,
    /// Per block, 16 bytes: code `j` in the low nibble of byte `j`, code `j + 16` in its high one.
    qs: Vec<u8>,
}

/// Activations rounded to Q8_0, per token row.
struct Q8_0Rows {
    blocks: usize,
    /// Per block: the scale, widened from the f16 the format rounds it to.
    d: Vec<f32>,
    /// Per block, 32 codes.
    qs: Vec<i8>,
}

/// `SPREAD[b]`: byte `i` is 16 when bit `i` of `b` is set, else 0.
const SPREAD: [u64; 256] = {
    let mut t = [0u64; 256];
    let mut b = 0;
    while b < 256 {
        let mut i = 0;
        while i < 8 {
            if b & (1 << i) != 0 {
                t[b] |= 16 << (8 * i);
            }
            i += 1;
        }
        b += 1;
    }
    t
};

impl Q5_0Matrix {
    /// The matrix from GGUF's bytes (22 per block, row-major); `None` if the sizes disagree.
    pub fn from_bytes(bytes: &[u8], rows: usize, cols: usize) -> Option<Self> {
        if cols == 0 || !cols.is_multiple_of(BLOCK) {
            return None;
        }
        let n = rows.checked_mul(cols / BLOCK)?;
        if bytes.len() != n.checked_mul(BLOCK_BYTES)? {
            return None;
        }
        let mut m = Q5_0Matrix {
            rows,
            cols,
            d: Vec::with_capacity(n),
            qh: Vec::with_capacity(n),
            qs: Vec::with_capacity(n * 16),
        };
        for b in bytes.chunks_exact(BLOCK_BYTES) {
            m.d.push(u16::from_le_bytes([b[0], b[1]]));
            m.qh.push(u32::from_le_bytes([b[2], b[3], b[4], b[5]]));
            m.qs.extend_from_slice(&b[6..22]);
        }
        Some(m)
    }

    /// The 32 codes `q − 16` of block `i` (counted over the whole matrix), in order.
    #[inline(always)]
    fn codes(&self, i: usize) -> [i8; BLOCK] {
        let qh = self.qh[i];
        let qs = &self.qs[i * 16..][..16];
        let lo = u64::from_le_bytes(qs[..8].try_into().expect("8 bytes"));
        let lo2 = u64::from_le_bytes(qs[8..].try_into().expect("8 bytes"));
        let nib = 0x0F0F_0F0F_0F0F_0F0Fu64;
        let high = |shift: u32| SPREAD[((qh >> shift) & 0xFF) as usize];
        let parts = [
            (lo & nib) | high(0),
            (lo2 & nib) | high(8),
            ((lo >> 4) & nib) | high(16),
            ((lo2 >> 4) & nib) | high(24),
        ];
        let mut out = [0i8; BLOCK];
        for (k, p) in parts.iter().enumerate() {
            for (j, byte) in p.to_le_bytes().iter().enumerate() {
                out[k * 8 + j] = *byte as i8 - 16;
            }
        }
        out
    }

    /// Row `r` as f32, exactly as the format defines it.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let nb = self.cols / BLOCK;
        for (b, chunk) in out.chunks_exact_mut(BLOCK).enumerate().take(nb) {
            let i = r * nb + b;
            let d = f16_to_f32(self.d[i]);
            for (o, q) in chunk.iter_mut().zip(self.codes(i)) {
                *o = d * q as f32;
            }
        }
    }
}

/// Rounds each row of `x` to Q8_0 blocks as llama.cpp does: `d = max|x| / 127` (stored as f16),
/// `q = round(x / d)`.
fn quantize_activations(x: &[f32], cols: usize) -> Q8_0Rows {
    let blocks = cols / BLOCK;
    let n = x.len() / BLOCK;
    let mut out = Q8_0Rows {
        blocks,
        d: Vec::with_capacity(n),
        qs: Vec::with_capacity(n * BLOCK),
    };
    for block in x.chunks_exact(BLOCK) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if d != 0.0 { 1.0 / d } else { 0.0 };
        out.d.push(half::f16::from_f32(d).to_f32());
        out.qs.extend(block.iter().map(|v| (v * id).round() as i8));
    }
    out
}

/// Row `r` of `w` against every token of `x` (`out[t]`, `t < m`): the row's codes are unpacked
/// once into `codes` (`cols` bytes), then read once per token.
#[inline(always)]
fn row_generic(w: &Q5_0Matrix, r: usize, x: &Q8_0Rows, codes: &mut [i8], out: &mut [f32]) {
    let nb = x.blocks;
    for (b, c) in codes.chunks_exact_mut(BLOCK).enumerate().take(nb) {
        c.copy_from_slice(&w.codes(r * nb + b));
    }
    for (t, o) in out.iter_mut().enumerate() {
        let mut acc = 0f32;
        for (b, q) in codes.chunks_exact(BLOCK).enumerate().take(nb) {
            let xq = &x.qs[(t * nb + b) * BLOCK..][..BLOCK];
            let mut sum = 0i32;
            for j in 0..BLOCK {
                sum += q[j] as i32 * xq[j] as i32;
            }
            acc += sum as f32 * (f16_to_f32(w.d[r * nb + b]) * x.d[t * nb + b]);
        }
        *o = acc;
    }
}

/// The same loops compiled for AVX2.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn row_avx2(w: &Q5_0Matrix, r: usize, x: &Q8_0Rows, codes: &mut [i8], out: &mut [f32]) {
    row_generic(w, r, x, codes, out)
}

fn row(avx2: bool, w: &Q5_0Matrix, r: usize, x: &Q8_0Rows, codes: &mut [i8], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if avx2 {
        // SAFETY: `avx2` is true only when the CPU reports AVX2 and FMA.
        return unsafe { row_avx2(w, r, x, codes, out) };
    }
    let _ = avx2;
    row_generic(w, r, x, codes, out)
}

fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Rows per work item: enough to amortise the hand-out, few enough to balance two workers.
const ROWS_PER_ITEM: usize = 16;

/// `y = x · Wᵀ` for `x: [m, cols]`, `y: [m, rows]`.
pub fn matmul(w: &Q5_0Matrix, x: &[f32], m: usize, y: &mut [f32]) {
    assert!(
        x.len() == m * w.cols && y.len() == m * w.rows,
        "x must be [m, cols] and y [m, rows]"
    );
    let xq = quantize_activations(x, w.cols);
    let avx2 = has_avx2();
    let rows = w.rows;
    let out = SharedRows::new(y, rows);
    candle_core::utils::barrier_pool().execute_chunked(rows.div_ceil(ROWS_PER_ITEM), |range| {
        let mut codes = vec![0i8; w.cols];
        let mut sums = vec![0f32; m];
        for item in range {
            for r in item * ROWS_PER_ITEM..rows.min((item + 1) * ROWS_PER_ITEM) {
                row(avx2, w, r, &xq, &mut codes, &mut sums);
                for (t, &v) in sums.iter().enumerate() {
                    // SAFETY: this item owns rows item·16 .. item·16 + 16: no other worker
                    // writes them.
                    unsafe { out.put(t, r, v) };
                }
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    fn random(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..rows * cols)
            .map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * 3.0)
            .collect()
    }

    /// The file's bytes, as candle's quantizer writes them.
    fn matrix(rows: usize, cols: usize, seed: u64) -> (Q5_0Matrix, QTensor) {
        let t = Tensor::from_vec(random(rows, cols, seed), (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::Q5_0).unwrap();
        let m = Q5_0Matrix::from_bytes(&q.data().unwrap(), rows, cols).unwrap();
        (m, q)
    }

    #[test]
    fn dequantized_rows_are_candles() {
        let (m, q) = matrix(5, 96, 1);
        let want = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (r, want) in want.iter().enumerate() {
            let mut row = vec![0f32; 96];
            m.dequantize_row(r, &mut row);
            assert_eq!(&row, want, "row {r}");
        }
    }

    /// Against the definition written plainly (dequantized weights, Q8_0-rounded activations,
    /// f64 sums) and against candle's own (scalar) Q5_0 product, on every path: one token and
    /// several, a row count that leaves a partial work item.
    #[test]
    fn products_equal_the_definition_and_candles() {
        for (rows, cols, m) in [(37, 64, 1), (20, 128, 5), (3, 32, 2)] {
            let (w, q) = matrix(rows, cols, rows as u64);
            let x = random(m, cols, 99);
            let mut y = vec![0f32; m * rows];
            matmul(&w, &x, m, &mut y);
            let xq = quantize_activations(&x, cols);
            let xt = Tensor::from_vec(x.clone(), (m, cols), &Device::Cpu).unwrap();
            let theirs = candle_core::Module::forward(
                &candle_core::quantized::QMatMul::from_qtensor(q).unwrap(),
                &xt,
            )
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
            for t in 0..m {
                for r in 0..rows {
                    let mut wr = vec![0f32; cols];
                    w.dequantize_row(r, &mut wr);
                    let mut want = 0f64;
                    for b in 0..cols / BLOCK {
                        let d = xq.d[t * xq.blocks + b] as f64;
                        for j in 0..BLOCK {
                            let xv = xq.qs[(t * xq.blocks + b) * BLOCK + j] as f64 * d;
                            want += wr[b * BLOCK + j] as f64 * xv;
                        }
                    }
                    let got = y[t * rows + r] as f64;
                    let scale = want.abs().max(1.0);
                    assert!(
                        (got - want).abs() / scale < 1e-5,
                        "({t}, {r}): {got} vs {want}"
                    );
                    let c = theirs[t * rows + r] as f64;
                    assert!(
                        (got - c).abs() / scale < 1e-5,
                        "({t}, {r}): {got} vs candle {c}"
                    );
                }
            }
        }
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(Q5_0Matrix::from_bytes(&[0; 22], 1, 31).is_none());
        assert!(Q5_0Matrix::from_bytes(&[0; 21], 1, 32).is_none());
        assert!(Q5_0Matrix::from_bytes(&[0; 22], 1, 32).is_some());
    }
}
