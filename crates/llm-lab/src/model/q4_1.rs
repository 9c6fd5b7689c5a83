//! Q4_1 weight matrices with fast CPU products.
//!
//! Q4_1 (llama.cpp's 4-bit format with a minimum) stores each run of 32 weights as a scale `d`, a
//! minimum `m` and 32 four-bit codes `q`: `w = d·q + m`. The default model ships in this format, but
//! candle 0.11 multiplies it with a scalar loop. This module keeps exactly the file's numbers, in
//! the same 20 bytes per block, only regrouped so SIMD loads take eight scales or two blocks of
//! codes at once, and multiplies them as the format is defined: activations are rounded to 8 bits
//! per block of 32 (Q8_1), then
//!
//! `Σ w·x ≈ Σ_blocks d_w·d_x·Σ q_w·q_x + m_w·s_x`, with `s_x = d_x·Σ q_x`,
//!
//! with AVX2 or VNNI instructions when the CPU has them (a scalar loop elsewhere), on candle's
//! worker threads. Results equal the definition (and candle's own Q4_1 kernel) up to the order of
//! floating-point additions.

use half::f16;

pub use super::simd::Kernel;
use super::simd::{self, f16_to_f32, Tiled};

/// Weights per block.
pub const BLOCK: usize = 32;
/// Bytes per stored block: two f16 and 16 bytes of packed codes.
const BLOCK_BYTES: usize = 20;
/// Blocks whose scales the kernel widens together (one 256-bit register of f32).
const GROUP: usize = 8;

/// A `[rows, cols]` matrix of Q4_1 blocks, row-major, stored as three parallel arrays.
#[derive(Debug, Clone)]
pub struct Q4_1Matrix {
    rows: usize,
    cols: usize,
    /// Per block: the scale `d` as f16 bits.
    d: Vec<u16>,
    /// Per block: the minimum `m` as f16 bits.
    m: Vec<u16>,
    /// Per block, 16 bytes: code `j` in the low nibble of byte `j`, code `j + 16` in its high one.
    qs: Vec<u8>,
}

/// Activations rounded to Q8_1, per token row, padded with zero blocks to whole groups.
pub(super) struct Q8_1Rows {
    /// Blocks per row, padded to a multiple of [`GROUP`].
    stride: usize,
    /// Per block: `d` and `s = d·Σq`, widened from the f16 the format rounds them to.
    d: Vec<f32>,
    s: Vec<f32>,
    /// `d` again, each group of eight in the order the SIMD kernel's block sums come out:
    /// 0, 2, 4, 6, 1, 3, 5, 7.
    d_folded: Vec<f32>,
    /// Per pair of blocks (2p, 2p+1), 64 codes laid out as the weight codes unpack:
    /// `[q_2p[0..16], q_2p+1[0..16], q_2p[16..32], q_2p+1[16..32]]`.
    qs: Vec<i8>,
}

impl Q8_1Rows {
    /// The 32 codes of block `b` of row `t`, in order.
    #[cfg(test)]
    fn block(&self, t: usize, b: usize) -> [i8; BLOCK] {
        let pair = &self.qs[(t * self.stride + b - b % 2) * BLOCK..][..2 * BLOCK];
        let half = (b % 2) * 16;
        std::array::from_fn(|j| {
            if j < 16 {
                pair[half + j]
            } else {
                pair[32 + half + j - 16]
            }
        })
    }
}

impl Q4_1Matrix {
    /// Takes GGUF's Q4_1 bytes of a `[rows, cols]` matrix; `None` if the sizes do not match.
    pub fn from_bytes(bytes: &[u8], rows: usize, cols: usize) -> Option<Self> {
        let n_blocks = rows.checked_mul(cols / BLOCK)?;
        if !cols.is_multiple_of(BLOCK) || bytes.len() != n_blocks.checked_mul(BLOCK_BYTES)? {
            return None;
        }
        let mut matrix = Q4_1Matrix {
            rows,
            cols,
            d: Vec::with_capacity(n_blocks),
            m: Vec::with_capacity(n_blocks),
            qs: Vec::with_capacity(n_blocks * 16),
        };
        for b in bytes.chunks_exact(BLOCK_BYTES) {
            matrix.d.push(u16::from_le_bytes([b[0], b[1]]));
            matrix.m.push(u16::from_le_bytes([b[2], b[3]]));
            matrix.qs.extend_from_slice(&b[4..]);
        }
        Some(matrix)
    }

    /// The stored bytes, as GGUF lays them out.
    #[cfg(test)]
    fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.d.len() * BLOCK_BYTES);
        for (i, (d, m)) in self.d.iter().zip(&self.m).enumerate() {
            out.extend_from_slice(&d.to_le_bytes());
            out.extend_from_slice(&m.to_le_bytes());
            out.extend_from_slice(&self.qs[i * 16..(i + 1) * 16]);
        }
        out
    }

    fn blocks_per_row(&self) -> usize {
        self.cols / BLOCK
    }

    /// Row `r` dequantized into `out` (`cols` values): an embedding lookup.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let nb = self.blocks_per_row();
        for (i, out) in out.chunks_exact_mut(BLOCK).enumerate() {
            let b = r * nb + i;
            let (d, m) = (
                f16::from_bits(self.d[b]).to_f32(),
                f16::from_bits(self.m[b]).to_f32(),
            );
            for (j, &q) in self.qs[b * 16..(b + 1) * 16].iter().enumerate() {
                out[j] = (q & 0x0F) as f32 * d + m;
                out[j + 16] = (q >> 4) as f32 * d + m;
            }
        }
    }
}

/// `ys[k] = x · Wₖᵀ` for matrices that read the same input (W_Q, W_K, W_V; gate and up): the
/// input is rounded to 8 bits once and all their rows are shared out among the workers in one go.
pub fn matmul_many(kernel: Kernel, ws: &[&Q4_1Matrix], x: &[f32], m: usize, ys: &mut [&mut [f32]]) {
    let cols = ws[0].cols;
    assert_eq!(x.len(), m * cols, "x must be [m, cols]");
    assert!(
        ws.iter().all(|w| w.cols == cols),
        "matrices must share the input width"
    );
    let xq = quantize_activations(x, cols);
    simd::matmul_many(kernel, ws, &xq, m, ys);
}

/// Rounds each row of `x` to Q8_1 blocks as llama.cpp's x86 quantizer does:
/// `q = round(x · (127 / max|x|))` ties to even, `d = max|x| / 127`, `s = d·Σq`, with `d` and
/// `s` rounded to f16 as the format stores them.
fn quantize_activations(x: &[f32], cols: usize) -> Q8_1Rows {
    let nb = cols / BLOCK;
    let stride = nb.div_ceil(GROUP) * GROUP;
    let n_rows = x.len() / cols;
    let mut out = Q8_1Rows {
        stride,
        d: vec![0.0; n_rows * stride],
        s: vec![0.0; n_rows * stride],
        d_folded: vec![0.0; n_rows * stride],
        qs: vec![0; n_rows * stride * BLOCK],
    };
    for (t, row) in x.chunks_exact(cols).enumerate() {
        for (b, xs) in row.chunks_exact(BLOCK).enumerate() {
            let amax = xs.iter().fold(0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
            let pair = &mut out.qs[(t * stride + b - b % 2) * BLOCK..][..2 * BLOCK];
            let half = (b % 2) * 16;
            let mut sum = 0i32;
            for (j, &v) in xs.iter().enumerate() {
                let q = simd::round_code(v * id);
                sum += q as i32;
                pair[if j < 16 { half + j } else { 32 + half + j - 16 }] = q;
            }
            let d16 = f16::from_f32(d);
            out.d[t * stride + b] = d16.to_f32();
            out.s[t * stride + b] =
                f16::from_f32(f16::from_f32(sum as f32).to_f32() * d16.to_f32()).to_f32();
        }
    }
    // Within each group, block b's scale goes to slot b/2 (even b) or 4 + b/2 (odd b).
    for (i, &d) in out.d.iter().enumerate() {
        let (group, b) = (i - i % GROUP, i % GROUP);
        out.d_folded[group + b / 2 + (b % 2) * GROUP / 2] = d;
    }
    out
}

impl Tiled for Q4_1Matrix {
    type Activations = Q8_1Rows;

    fn rows(&self) -> usize {
        self.rows
    }

    /// Dot products of weight rows `rows` with token rows `tokens`: `R × T` results.
    fn tile<const R: usize, const T: usize>(
        &self,
        kernel: Kernel,
        rows: [usize; R],
        x: &Q8_1Rows,
        tokens: [usize; T],
    ) -> [[f32; T]; R] {
        let w = self;
        // The kernels read `w.cols / BLOCK` blocks per row and token, unchecked: the rows must
        // exist and each token's activations must be at least that wide.
        assert!(
            rows.iter().all(|&r| r < w.rows)
                && x.stride >= w.blocks_per_row()
                && x.qs.len() >= x.d.len() * BLOCK
                && tokens.iter().all(|&t| (t + 1) * x.stride <= x.d.len()),
            "Q4_1 tile out of range: the activations are narrower than the matrix"
        );
        match kernel {
            Kernel::Scalar => rows.map(|r| tokens.map(|t| dot_scalar(w, r, x, t))),
            #[cfg(target_arch = "x86_64")]
            // SAFETY: available() saw the features; the indices were checked above.
            Kernel::Avx2 => unsafe { x86::tile_avx2::<R, T>(w, rows, x, tokens) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: available() saw the features; the indices were checked above.
            Kernel::AvxVnni => unsafe { x86::tile_avxvnni::<R, T>(w, rows, x, tokens) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: available() saw the features; the indices were checked above.
            Kernel::Avx512Vnni => unsafe { x86::tile_avx512vnni::<R, T>(w, rows, x, tokens) },
        }
    }
}

/// The definition, one code at a time: the reference the SIMD kernels are tested against, and the
/// kernel of CPUs without them. The 16-code runs and integer sums let the compiler vectorise it
/// (SSE2, NEON) without changing a bit of the result.
fn dot_scalar(w: &Q4_1Matrix, r: usize, x: &Q8_1Rows, t: usize) -> f32 {
    let nb = w.blocks_per_row();
    let mut sum = 0f32;
    for i in 0..nb {
        let (b, xb) = (r * nb + i, t * x.stride + i);
        let codes = &w.qs[b * 16..(b + 1) * 16];
        // This block's codes 0..16 and 16..32, from the pair layout of the activations.
        let pair = &x.qs[(xb - i % 2) * BLOCK..][..2 * BLOCK];
        let half = (i % 2) * 16;
        let (x_lo, x_hi) = (&pair[half..half + 16], &pair[32 + half..32 + half + 16]);
        let mut qq = 0i32;
        for j in 0..16 {
            qq +=
                (codes[j] & 0x0F) as i32 * x_lo[j] as i32 + (codes[j] >> 4) as i32 * x_hi[j] as i32;
        }
        sum += qq as f32 * f16_to_f32(w.d[b]) * x.d[xb] + f16_to_f32(w.m[b]) * x.s[xb];
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Q4_1Matrix, Q8_1Rows, BLOCK, GROUP};
    use std::arch::x86_64::*;

    /// Defines one `R × T` tile kernel for a set of target features and a way to sum the u8 × i8
    /// products of a pair of blocks into eight i32 lanes (lanes 0..4: block 2p, 4..8: block 2p+1).
    ///
    /// A group of eight blocks at a time: the eight weight scales and minima are widened by one
    /// instruction each; two blocks of codes come in one load and unpack into the layout the
    /// activations were stored in; the four pair sums fold into eight block sums with three
    /// horizontal adds, so a group costs one conversion and two FMAs per row and token. A row's
    /// last, partial group is first copied into a zero-padded buffer, so the loop has no branches.
    macro_rules! tile_kernel {
        ($name:ident, $features:literal, |$lo:ident, $hi:ident, $x_lo:ident, $x_hi:ident, $ones:ident| $pair_sums:expr) => {
            /// # Safety
            /// The CPU must have the enabled features; rows and tokens must be in range.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name<const R: usize, const T: usize>(
                w: &Q4_1Matrix,
                rows: [usize; R],
                x: &Q8_1Rows,
                tokens: [usize; T],
            ) -> [[f32; T]; R] {
                // SAFETY: the caller checked every row and token index; every pointer below
                // stays inside a row's blocks (nb of them, the activations padded to whole
                // groups) or inside the zero-padded tail buffers.
                unsafe {
                    let nb = w.cols / BLOCK;
                    let low4 = _mm256_set1_epi8(0x0F);
                    #[allow(unused_variables)]
                    let $ones = _mm256_set1_epi16(1);
                    // The horizontal adds leave block sums in the order 0, 2, 4, 6, 1, 3, 5, 7.
                    let folded = _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7);
                    let mut tail_d = [0u16; GROUP];
                    let mut tail_m = [0u16; GROUP];
                    let mut tail_qs = [0u8; GROUP * 16];
                    let mut out = [[0f32; T]; R];
                    for i in 0..R {
                        let row = rows[i] * nb;
                        // Both terms of every block land in one accumulator per token.
                        let mut acc = [_mm256_setzero_ps(); T];
                        for g in (0..nb).step_by(GROUP) {
                            let n = GROUP.min(nb - g);
                            let (d, m, qs) = if n == GROUP {
                                // This group PREFETCH_ROWS rows on, as in simd's kernels.
                                let ahead = row + crate::model::simd::PREFETCH_ROWS * nb + g;
                                let qs_ahead = w.qs.as_ptr().wrapping_add(ahead * 16) as *const i8;
                                _mm_prefetch::<_MM_HINT_T0>(qs_ahead);
                                _mm_prefetch::<_MM_HINT_T0>(qs_ahead.wrapping_add(64));
                                _mm_prefetch::<_MM_HINT_T0>(
                                    w.d.as_ptr().wrapping_add(ahead) as *const i8
                                );
                                _mm_prefetch::<_MM_HINT_T0>(
                                    w.m.as_ptr().wrapping_add(ahead) as *const i8
                                );
                                (
                                    w.d.as_ptr().add(row + g),
                                    w.m.as_ptr().add(row + g),
                                    w.qs.as_ptr().add((row + g) * 16),
                                )
                            } else {
                                tail_d.fill(0);
                                tail_m.fill(0);
                                tail_qs.fill(0);
                                tail_d[..n].copy_from_slice(&w.d[row + g..row + g + n]);
                                tail_m[..n].copy_from_slice(&w.m[row + g..row + g + n]);
                                tail_qs[..n * 16]
                                    .copy_from_slice(&w.qs[(row + g) * 16..(row + g + n) * 16]);
                                (tail_d.as_ptr(), tail_m.as_ptr(), tail_qs.as_ptr())
                            };
                            let dw = _mm256_permutevar8x32_ps(
                                _mm256_cvtph_ps(_mm_loadu_si128(d as *const __m128i)),
                                folded,
                            );
                            let mw = _mm256_cvtph_ps(_mm_loadu_si128(m as *const __m128i));
                            // Codes of blocks 2p and 2p+1: low nibbles are their codes 0..16, high
                            // nibbles 16..32.
                            let mut lo = [_mm256_setzero_si256(); GROUP / 2];
                            let mut hi = [_mm256_setzero_si256(); GROUP / 2];
                            for p in 0..GROUP / 2 {
                                let packed = _mm256_loadu_si256(qs.add(p * 32) as *const __m256i);
                                lo[p] = _mm256_and_si256(packed, low4);
                                hi[p] = _mm256_and_si256(_mm256_srli_epi16(packed, 4), low4);
                            }
                            for j in 0..T {
                                let xb = tokens[j] * x.stride + g; // padded to whole groups
                                let xq = x.qs.as_ptr().add(xb * BLOCK);
                                let mut sums = [_mm256_setzero_si256(); GROUP / 2];
                                for p in 0..GROUP / 2 {
                                    let ($lo, $hi) = (lo[p], hi[p]);
                                    let $x_lo =
                                        _mm256_loadu_si256(xq.add(p * 64) as *const __m256i);
                                    let $x_hi =
                                        _mm256_loadu_si256(xq.add(p * 64 + 32) as *const __m256i);
                                    sums[p] = $pair_sums;
                                }
                                let blocks = _mm256_hadd_epi32(
                                    _mm256_hadd_epi32(sums[0], sums[1]),
                                    _mm256_hadd_epi32(sums[2], sums[3]),
                                );
                                let xd = _mm256_loadu_ps(x.d_folded.as_ptr().add(xb));
                                let xs = _mm256_loadu_ps(x.s.as_ptr().add(xb));
                                acc[j] = _mm256_fmadd_ps(
                                    _mm256_mul_ps(dw, xd),
                                    _mm256_cvtepi32_ps(blocks),
                                    acc[j],
                                );
                                acc[j] = _mm256_fmadd_ps(mw, xs, acc[j]);
                            }
                        }
                        for j in 0..T {
                            out[i][j] = hsum(acc[j]);
                        }
                    }
                    out
                }
            }
        };
    }

    // u8 × i8 pairs to i16 (≤ 2·15·127 each, ≤ 4·15·127 after the add: no overflow), then to i32.
    tile_kernel!(tile_avx2, "avx2,fma,f16c", |lo, hi, x_lo, x_hi, ones| {
        _mm256_madd_epi16(
            _mm256_add_epi16(
                _mm256_maddubs_epi16(lo, x_lo),
                _mm256_maddubs_epi16(hi, x_hi),
            ),
            ones,
        )
    });
    tile_kernel!(
        tile_avxvnni,
        "avx2,fma,f16c,avxvnni",
        |lo, hi, x_lo, x_hi, ones| {
            _mm256_dpbusd_avx_epi32(
                _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), lo, x_lo),
                hi,
                x_hi,
            )
        }
    );
    tile_kernel!(
        tile_avx512vnni,
        "avx2,fma,f16c,avx512vnni,avx512vl",
        |lo, hi, x_lo, x_hi, ones| {
            _mm256_dpbusd_epi32(
                _mm256_dpbusd_epi32(_mm256_setzero_si256(), lo, x_lo),
                hi,
                x_hi,
            )
        }
    );

    #[target_feature(enable = "avx2")]
    fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
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
    fn matrices_sharing_an_input_give_what_each_gives_alone() {
        let (a, x) = random_matrix(37, 96, 3);
        let (b, _) = random_matrix(6, 96, 4);
        for m in [1, 5] {
            let x = &x[..m * 96];
            let (mut ya, mut yb) = (vec![0f32; m * 37], vec![0f32; m * 6]);
            matmul_many(Kernel::best(), &[&a, &b], x, m, &mut [&mut ya, &mut yb]);
            let (mut wa, mut wb) = (vec![0f32; m * 37], vec![0f32; m * 6]);
            matmul_many(Kernel::best(), &[&a], x, m, &mut [&mut wa]);
            matmul_many(Kernel::best(), &[&b], x, m, &mut [&mut wb]);
            assert_eq!((ya, yb), (wa, wb), "{m} tokens");
        }
    }

    #[test]
    fn activations_keep_each_block_in_order() {
        let x: Vec<f32> = (0..3 * 96).map(|i| (i % 97) as f32 - 48.0).collect();
        let q = quantize_activations(&x, 96);
        assert_eq!(q.stride, GROUP);
        for t in 0..3 {
            for b in 0..3 {
                let d = q.d[t * q.stride + b];
                let back: Vec<f32> = q.block(t, b).iter().map(|&c| c as f32 * d).collect();
                for (j, v) in back.iter().enumerate() {
                    assert!(
                        (v - x[t * 96 + b * BLOCK + j]).abs() <= d,
                        "token {t} block {b} code {j}"
                    );
                }
            }
            // Padding blocks are zero, so they add nothing.
            assert!(q.d[t * q.stride + 3..(t + 1) * q.stride]
                .iter()
                .all(|&d| d == 0.0));
        }
    }

    #[test]
    fn every_tile_shape_agrees_with_the_definition_and_the_f32_product() {
        // Whole groups, a partial group with an odd block, and the model's 18-block rows.
        for (rows, cols) in [(37, 256), (6, 96), (9, 576), (5, 32)] {
            let (w, x) = random_matrix(rows, cols, 7);
            for (kernel, m) in Kernel::available()
                .into_iter()
                .flat_map(|k| [1, 2, 4, 9].map(|m| (k, m)))
            {
                let x = &x[..m * cols];
                let mut y = vec![0f32; m * rows];
                matmul_many(kernel, &[&w], x, m, &mut [&mut y]);
                let xq = quantize_activations(x, cols);
                let mut wrow = vec![0f32; cols];
                for r in 0..rows {
                    w.dequantize_row(r, &mut wrow);
                    for t in 0..m {
                        let exact: f32 = wrow
                            .iter()
                            .zip(&x[t * cols..(t + 1) * cols])
                            .map(|(a, b)| a * b)
                            .sum();
                        let def = dot_scalar(&w, r, &xq, t);
                        let got = y[t * rows + r];
                        // Only the order of float additions differs from the definition.
                        assert!(
                            (got - def).abs() <= 1e-5 * (1.0 + def.abs()),
                            "{kernel:?} {rows}×{cols}, row {r} token {t}: {got} vs definition {def}"
                        );
                        // 8-bit activations keep the product close to the exact one.
                        assert!(
                            (got - exact).abs() <= 0.02 * (1.0 + exact.abs()),
                            "{kernel:?} {rows}×{cols}, row {r} token {t}: {got} vs exact {exact}"
                        );
                    }
                }
            }
        }
    }
}
