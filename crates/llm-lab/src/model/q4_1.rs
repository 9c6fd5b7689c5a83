//! Q4_1 weight matrices with fast CPU products.
//!
//! Q4_1 (llama.cpp's 4-bit format with a minimum) stores each run of 32 weights as a scale `d`, a
//! minimum `m` and 32 four-bit codes `q`: `w = d·q + m`. The default model ships in this format, but
//! candle 0.11 multiplies it with a scalar loop. This module keeps the file's blocks byte for byte
//! (so memory stays the file's size) and multiplies them the way llama.cpp defines the format:
//! activations are rounded to 8 bits per block of 32 (Q8_1), then
//!
//! `Σ w·x ≈ Σ_blocks d_w·d_x·Σ q_w·q_x + m_w·s_x`, with `s_x = d_x·Σ q_x`,
//!
//! using AVX2 when the CPU has it and candle's worker threads. The products equal candle's own
//! Q4_1 kernel up to the order of floating-point additions; the parity tests pin that.

use half::f16;

/// Weights per block.
pub const BLOCK: usize = 32;
/// Bytes per stored block: two f16 and 16 bytes of packed codes.
const BLOCK_BYTES: usize = 20;

/// One block of weights exactly as GGUF stores it.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct BlockQ4_1 {
    /// Scale and minimum as f16 bits.
    d: u16,
    m: u16,
    /// Code `j` in the low nibble of byte `j`, code `j + 16` in its high nibble.
    qs: [u8; BLOCK / 2],
}
const _: () = assert!(std::mem::size_of::<BlockQ4_1>() == BLOCK_BYTES);

/// One block of activations rounded to 8 bits; `d` and `s` already widened from their f16 values.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct BlockQ8_1 {
    d: f32,
    s: f32,
    qs: [i8; BLOCK],
}

/// A `[rows, cols]` matrix of Q4_1 blocks, row-major.
#[derive(Debug, Clone)]
pub struct Q4_1Matrix {
    blocks: Vec<BlockQ4_1>,
    rows: usize,
    cols: usize,
}

impl Q4_1Matrix {
    /// Takes GGUF's Q4_1 bytes of a `[rows, cols]` matrix; `None` if the sizes do not match.
    pub fn from_bytes(bytes: &[u8], rows: usize, cols: usize) -> Option<Self> {
        if cols % BLOCK != 0
            || bytes.len() != rows.checked_mul(cols / BLOCK)?.checked_mul(BLOCK_BYTES)?
        {
            return None;
        }
        let blocks = bytes
            .chunks_exact(BLOCK_BYTES)
            .map(|b| {
                let mut qs = [0u8; BLOCK / 2];
                qs.copy_from_slice(&b[4..]);
                BlockQ4_1 {
                    d: u16::from_le_bytes([b[0], b[1]]),
                    m: u16::from_le_bytes([b[2], b[3]]),
                    qs,
                }
            })
            .collect();
        Some(Q4_1Matrix { blocks, rows, cols })
    }

    /// The stored bytes, as GGUF lays them out.
    #[cfg(test)]
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.blocks.len() * BLOCK_BYTES);
        for b in &self.blocks {
            out.extend_from_slice(&b.d.to_le_bytes());
            out.extend_from_slice(&b.m.to_le_bytes());
            out.extend_from_slice(&b.qs);
        }
        out
    }

    fn row(&self, r: usize) -> &[BlockQ4_1] {
        let n = self.cols / BLOCK;
        &self.blocks[r * n..(r + 1) * n]
    }

    /// Row `r` dequantized into `out` (`cols` values): an embedding lookup.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        for (b, out) in self.row(r).iter().zip(out.chunks_exact_mut(BLOCK)) {
            let (d, m) = (f16::from_bits(b.d).to_f32(), f16::from_bits(b.m).to_f32());
            for (j, &q) in b.qs.iter().enumerate() {
                out[j] = (q & 0x0F) as f32 * d + m;
                out[j + BLOCK / 2] = (q >> 4) as f32 * d + m;
            }
        }
    }

    /// `y = x · Wᵀ` for `x: [m, cols]` (row-major) into `y: [m, rows]`.
    pub fn matmul(&self, x: &[f32], m: usize, y: &mut [f32]) {
        assert_eq!(x.len(), m * self.cols, "x must be [m, cols]");
        assert_eq!(y.len(), m * self.rows, "y must be [m, rows]");
        let xq = quantize_activations(x);
        let nb = self.cols / BLOCK;
        let kernel = Kernel::detect();
        let rows = self.rows;
        let y_ptr = y.as_mut_ptr() as usize;
        // Each worker takes whole weight rows and runs them against every token, so a row is read
        // from memory once per call however many tokens there are.
        candle_core::utils::barrier_pool().execute_chunked(rows, |range| {
            for r in range {
                let w = self.row(r);
                let mut t = 0;
                while t + 4 <= m {
                    let dots =
                        kernel.dot4(w, [0, 1, 2, 3].map(|i| &xq[(t + i) * nb..(t + i + 1) * nb]));
                    for (i, v) in dots.into_iter().enumerate() {
                        // SAFETY: element (t+i, r) is written by the one worker that owns row r.
                        unsafe { *(y_ptr as *mut f32).add((t + i) * rows + r) = v };
                    }
                    t += 4;
                }
                for t in t..m {
                    let v = kernel.dot(w, &xq[t * nb..(t + 1) * nb]);
                    // SAFETY: as above.
                    unsafe { *(y_ptr as *mut f32).add(t * rows + r) = v };
                }
            }
        });
    }
}

/// Rounds each row of `x` to Q8_1 blocks: `q = round(x / d)`, `d = max|x| / 127`, `s = d·Σq`,
/// with `d` and `s` rounded to f16 as the format stores them.
fn quantize_activations(x: &[f32]) -> Vec<BlockQ8_1> {
    x.chunks_exact(BLOCK)
        .map(|xs| {
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            let mut qs = [0i8; BLOCK];
            let mut sum = 0i32;
            for (q, &v) in qs.iter_mut().zip(xs) {
                *q = (v * id).round() as i8;
                sum += *q as i32;
            }
            let d16 = f16::from_f32(d);
            let s16 = f16::from_f32(f16::from_f32(sum as f32).to_f32() * d16.to_f32());
            BlockQ8_1 {
                d: d16.to_f32(),
                s: s16.to_f32(),
                qs,
            }
        })
        .collect()
}

/// Which dot-product implementation this CPU runs.
#[derive(Debug, Clone, Copy)]
enum Kernel {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2,
}

impl Kernel {
    fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            return Kernel::Avx2;
        }
        Kernel::Scalar
    }

    fn dot(self, w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
        match self {
            Kernel::Scalar => dot_scalar(w, x),
            // SAFETY: detect() saw the features.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { avx2::dot::<1>(w, [x])[0] },
        }
    }

    fn dot4(self, w: &[BlockQ4_1], x: [&[BlockQ8_1]; 4]) -> [f32; 4] {
        match self {
            Kernel::Scalar => x.map(|x| dot_scalar(w, x)),
            // SAFETY: detect() saw the features.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { avx2::dot::<4>(w, x) },
        }
    }
}

/// The definition, one code at a time; also the reference the SIMD kernel is tested against.
fn dot_scalar(w: &[BlockQ4_1], x: &[BlockQ8_1]) -> f32 {
    let mut sum = 0f32;
    for (w, x) in w.iter().zip(x) {
        let mut qq = 0i32;
        for j in 0..BLOCK / 2 {
            qq += (w.qs[j] & 0x0F) as i32 * x.qs[j] as i32
                + (w.qs[j] >> 4) as i32 * x.qs[j + BLOCK / 2] as i32;
        }
        sum += qq as f32 * f16::from_bits(w.d).to_f32() * x.d + f16::from_bits(w.m).to_f32() * x.s;
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{BlockQ4_1, BlockQ8_1};
    use std::arch::x86_64::*;

    /// Dot products of one weight row with `N` activation rows, unpacking each weight block once.
    /// Integer block sums come from SIMD; the float sum over blocks runs in the definition's order
    /// (`s += q·d_w·d_x + m_w·s_x`, block by block) so results are bit-identical to it.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn dot<const N: usize>(w: &[BlockQ4_1], x: [&[BlockQ8_1]; N]) -> [f32; N] {
        let low4 = _mm256_set1_epi8(0x0F);
        let ones = _mm256_set1_epi16(1);
        let mut out = [0f32; N];
        for (b, wb) in w.iter().enumerate() {
            // d and m of the weight block, widened from f16 in one instruction.
            let dm = _mm_cvtph_ps(_mm_cvtsi32_si128(
                ((wb.m as u32) << 16 | wb.d as u32) as i32,
            ));
            let (dw, mw) = (_mm_cvtss_f32(dm), _mm_cvtss_f32(_mm_shuffle_ps(dm, dm, 1)));
            // 16 bytes → 32 codes: low nibbles are codes 0..16, high nibbles codes 16..32.
            let packed = _mm_loadu_si128(wb.qs.as_ptr() as *const __m128i);
            let codes = _mm256_and_si256(_mm256_set_m128i(_mm_srli_epi16(packed, 4), packed), low4);
            for i in 0..N {
                let xb = x[i].get_unchecked(b);
                let xq = _mm256_loadu_si256(xb.qs.as_ptr() as *const __m128i as *const __m256i);
                // u8 × i8 pairs summed to i16 (15·127·2 cannot overflow), then to 8 × i32, then one.
                let quads = _mm256_madd_epi16(_mm256_maddubs_epi16(codes, xq), ones);
                let qq = hsum_i32(quads);
                out[i] += qq as f32 * dw * xb.d + mw * xb.s;
            }
        }
        out
    }

    #[target_feature(enable = "avx2")]
    unsafe fn hsum_i32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b01_00_11_10));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32(s, 0b10_11_00_01));
        _mm_cvtsi128_si32(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn random_matrix(rows: usize, cols: usize, seed: u64) -> (Q4_1Matrix, Vec<f32>) {
        let mut s = seed;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as u32
        };
        let mut bytes = vec![];
        for _ in 0..rows * cols / BLOCK {
            bytes.extend_from_slice(
                &f16::from_f32((next() % 1000) as f32 / 50_000.0 + 1e-4)
                    .to_bits()
                    .to_le_bytes(),
            );
            bytes.extend_from_slice(
                &f16::from_f32(-((next() % 1000) as f32) / 20_000.0)
                    .to_bits()
                    .to_le_bytes(),
            );
            bytes.extend((0..16).map(|_| next() as u8));
        }
        let m = Q4_1Matrix::from_bytes(&bytes, rows, cols).unwrap();
        let x = (0..9 * cols)
            .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        (m, x)
    }

    #[test]
    fn bytes_round_trip_and_bad_sizes() {
        let (m, _) = random_matrix(3, 64, 1);
        assert_eq!(
            Q4_1Matrix::from_bytes(&m.to_bytes(), 3, 64)
                .unwrap()
                .to_bytes(),
            m.to_bytes()
        );
        assert!(Q4_1Matrix::from_bytes(&m.to_bytes(), 3, 65).is_none());
        assert!(Q4_1Matrix::from_bytes(&m.to_bytes()[1..], 3, 64).is_none());
        assert!(Q4_1Matrix::from_bytes(&m.to_bytes(), usize::MAX, 64).is_none());
    }

    #[test]
    fn kernel_is_bit_identical_to_the_definition_and_close_to_f32() {
        let (rows, cols) = (37, 256);
        let (w, x) = random_matrix(rows, cols, 7);
        for m in [1, 3, 4, 9] {
            let x = &x[..m * cols];
            let mut y = vec![0f32; m * rows];
            w.matmul(x, m, &mut y);
            let xq = quantize_activations(x);
            let mut wrow = vec![0f32; cols];
            for r in 0..rows {
                w.dequantize_row(r, &mut wrow);
                for t in 0..m {
                    let exact: f32 = wrow
                        .iter()
                        .zip(&x[t * cols..(t + 1) * cols])
                        .map(|(a, b)| a * b)
                        .sum();
                    let def =
                        dot_scalar(w.row(r), &xq[t * (cols / BLOCK)..(t + 1) * (cols / BLOCK)]);
                    let got = y[t * rows + r];
                    assert_eq!(
                        got.to_bits(),
                        def.to_bits(),
                        "row {r} token {t}: {got} vs definition {def}"
                    );
                    // 8-bit activations: the product stays close to the exact one.
                    assert!(
                        (got - exact).abs() <= 0.02 * (1.0 + exact.abs()),
                        "row {r} token {t}: {got} vs exact {exact}"
                    );
                }
            }
        }
    }
}
