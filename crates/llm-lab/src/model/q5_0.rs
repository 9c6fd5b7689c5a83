//! Q5_0 weight matrices with SIMD CPU products (most of Gemma 3's layer weights).
//!
//! Q5_0 (llama.cpp's 5-bit format) stores each run of 32 weights as a scale `d` (f16), the fifth
//! bits of the 32 codes (`qh`, 32 bits) and their low four bits (16 bytes): `w = d·(q − 16)`.
//! candle 0.11 multiplies it with a scalar loop that extracts every bit on its own. This module
//! keeps the file's 22 bytes per block and multiplies them as llama.cpp defines the format:
//! activations rounded to Q8_0 (32 codes and an f16 scale per block), then
//!
//! `Σ w·x ≈ Σ_blocks d_w·d_x·Σ (q_w − 16)·q_x`.
//!
//! On x86 a block unpacks into 32 signed bytes in a few instructions (the fifth bits spread into
//! bytes by a shuffle and a compare) and then multiplies exactly as a Q8_0 block does, with the
//! same tile kernels (`simd::signed_tile_kernel`); elsewhere the definition, written for the
//! compiler to vectorise (the fifth bits spread with a 256-entry table). Rows are shared out among
//! candle's worker threads as for every format ([`simd::matmul_many`]). Results equal the
//! definition up to the order of float additions.

use super::q8_0::Q8_0Rows;
use super::simd::{self, f16_to_f32, Kernel, Tiled};

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

    /// Input width.
    pub(super) fn cols(&self) -> usize {
        self.cols
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

impl Tiled for Q5_0Matrix {
    type Activations = Q8_0Rows;

    fn rows(&self) -> usize {
        self.rows
    }

    fn tile<const R: usize, const T: usize>(
        &self,
        kernel: Kernel,
        rows: [usize; R],
        x: &Q8_0Rows,
        tokens: [usize; T],
    ) -> [[f32; T]; R] {
        // The kernels read `cols / BLOCK` blocks per row and token, unchecked.
        assert!(
            rows.iter().all(|&r| r < self.rows)
                && x.blocks == self.cols / BLOCK
                && x.qs.len() == x.d.len() * BLOCK
                && tokens.iter().all(|&t| (t + 1) * x.blocks <= x.d.len()),
            "Q5_0 tile out of range: the activations do not match the matrix"
        );
        match kernel {
            Kernel::Scalar => tile_scalar(self, rows, x, tokens),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: Kernel::available() saw the features; the indices were checked above.
            Kernel::Avx2 => unsafe { x86::tile_avx2::<R, T>(self, rows, x, tokens) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Kernel::AvxVnni => unsafe { x86::tile_avxvnni::<R, T>(self, rows, x, tokens) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: as above.
            Kernel::Avx512Vnni => unsafe { x86::tile_avx512vnni::<R, T>(self, rows, x, tokens) },
        }
    }
}

impl simd::SignedBlocks for Q5_0Matrix {
    fn blocks_per_row(&self) -> usize {
        self.cols / BLOCK
    }

    fn block_codes(&self, kernel: Kernel, wb: usize) -> [i8; BLOCK] {
        #[cfg(target_arch = "x86_64")]
        if kernel != Kernel::Scalar {
            assert!(wb < self.d.len(), "block out of range");
            let mut out = [0i8; BLOCK];
            // SAFETY: every kernel but the scalar one has AVX2; wb was checked above.
            unsafe {
                let codes = x86::codes(self, wb);
                std::arch::x86_64::_mm256_storeu_si256(out.as_mut_ptr() as *mut _, codes);
            }
            return out;
        }
        let _ = kernel;
        self.codes(wb)
    }

    fn block_scale(&self, wb: usize) -> f32 {
        f16_to_f32(self.d[wb])
    }
}

/// The definition, block by block: each block's codes unpacked once for the tile's tokens,
/// exact integer sums, then one scaled float addition per block. The reference of the SIMD
/// kernels, and the kernel of CPUs without them (the compiler vectorises the sums).
fn tile_scalar<const R: usize, const T: usize>(
    w: &Q5_0Matrix,
    rows: [usize; R],
    x: &Q8_0Rows,
    tokens: [usize; T],
) -> [[f32; T]; R] {
    let nb = x.blocks;
    let mut out = [[0f32; T]; R];
    for (i, &r) in rows.iter().enumerate() {
        for b in 0..nb {
            let codes = w.codes(r * nb + b);
            let dw = f16_to_f32(w.d[r * nb + b]);
            for (j, &t) in tokens.iter().enumerate() {
                let xq = &x.qs[(t * nb + b) * BLOCK..][..BLOCK];
                let sum: i32 = codes
                    .iter()
                    .zip(xq)
                    .map(|(&a, &b)| a as i32 * b as i32)
                    .sum();
                out[i][j] += sum as f32 * (dw * x.d[t * nb + b]);
            }
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Q5_0Matrix;
    use crate::model::simd::signed_tile_kernel;
    use std::arch::x86_64::*;

    // The 32 codes q − 16 of a block: low nibbles (codes 0..16) and high ones (16..32) side by
    // side, then the fifth bits spread into bytes (byte j tests bit j of qh): where a fifth bit
    // is clear, 0xF0 turns the nibble n into the signed byte n − 16; where set, n is n + 16 − 16.
    /// Block `wb`'s 32 codes `q − 16` as signed bytes.
    ///
    /// # Safety
    /// The CPU must have AVX2; `wb` must be a block of the matrix.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn codes(m: &Q5_0Matrix, wb: usize) -> __m256i {
        // SAFETY: block wb's 16 bytes of nibbles and its fifth bits are in range (the caller).
        unsafe {
            let q = _mm_loadu_si128(m.qs.as_ptr().add(wb * 16) as *const __m128i);
            let nibbles = _mm256_and_si256(
                _mm256_set_m128i(_mm_srli_epi16(q, 4), q),
                _mm256_set1_epi8(0x0F),
            );
            let which_byte = _mm256_set_epi64x(
                0x0303_0303_0303_0303,
                0x0202_0202_0202_0202,
                0x0101_0101_0101_0101,
                0,
            );
            let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
            let spread = _mm256_shuffle_epi8(
                _mm256_set1_epi32(*m.qh.get_unchecked(wb) as i32),
                which_byte,
            );
            let fifth = _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit);
            _mm256_or_si256(
                nibbles,
                _mm256_andnot_si256(fifth, _mm256_set1_epi8(0xF0u8 as i8)),
            )
        }
    }

    signed_tile_kernel!(Q5_0Matrix, |m, wb| codes(m, wb), prefetch: {
        _mm_prefetch::<_MM_HINT_T0>(m.qs.as_ptr().wrapping_add(wb * 16) as *const i8);
        _mm_prefetch::<_MM_HINT_T0>(m.qh.as_ptr().wrapping_add(wb) as *const i8);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::q8_0::{matmul_partners, quantize_activations, Q8Partner};
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// `y = x · Wᵀ`, as the model runs it.
    fn matmul(kernel: Kernel, w: &Q5_0Matrix, x: &[f32], m: usize, y: &mut [f32]) {
        matmul_partners(kernel, &[Q8Partner::Q5_0(w)], x, m, &mut [y]);
    }

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
        for (rows, cols, m) in [
            (37, 64, 1),
            (20, 128, 5),
            (3, 32, 2),
            (6, 640, 4),
            (5, 96, 9),
        ] {
            let (w, q) = matrix(rows, cols, rows as u64);
            let x = random(m, cols, 99);
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
            for kernel in Kernel::available() {
                let mut y = vec![0f32; m * rows];
                matmul(kernel, &w, &x, m, &mut y);
                let xq = quantize_activations(&x, cols);
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
                            "{kernel:?} ({t}, {r}): {got} vs {want}"
                        );
                        let c = theirs[t * rows + r] as f64;
                        assert!(
                            (got - c).abs() / scale < 1e-5,
                            "{kernel:?} ({t}, {r}): {got} vs candle {c}"
                        );
                    }
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
