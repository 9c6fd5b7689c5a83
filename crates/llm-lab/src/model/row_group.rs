//! A prompt's products on x86 CPUs, eight weight rows at a time.
//!
//! The tile kernels (`simd::signed_tile_kernel`) keep one row's partial sums in a vector, so each
//! block of each row costs, per token, an integer-to-float conversion and a scaled addition. Here
//! the codes of eight rows are interleaved so that one 256-bit load holds four consecutive codes
//! of each row; a `dpbusd` against four of a token's codes (broadcast) adds four products to each
//! of the eight rows' block sums. After the block's eight loads one vector holds the eight rows'
//! exact block sums, and one conversion and one FMA scale them all.
//!
//! `dpbusd` multiplies unsigned bytes by signed ones, so the codes are stored as `q_w + 128`; the
//! excess, `128 · Σ q_x`, comes off each block's integer sum, which stays exact:
//! `Σ (q_w + 128)·q_x − 128·Σ q_x = Σ q_w·q_x`. Results equal the definition (exact block sums,
//! one scaled float addition per block) up to the order of float additions.

use super::q8_0::Q8_0Rows;
use super::simd::{Kernel, SignedBlocks};

/// Rows per group: one 32-bit lane each in a 256-bit vector.
pub(super) const GROUP: usize = 8;
/// Bytes of one block of a group: 32 codes for each of its rows.
const BLOCK_BYTES: usize = 32 * GROUP;

/// Eight rows' blocks, interleaved.
#[derive(Debug, Default)]
pub(super) struct RowGroup {
    blocks: usize,
    /// Per block, eight chunks of 32 bytes: chunk `k` holds codes `4k..4k + 4` of rows 0..8,
    /// each plus 128, as one u32 per row. Rows past the matrix's end are zeros (128 here).
    codes: Vec<u32>,
    /// Per block, the eight rows' scales.
    scales: Vec<f32>,
}

impl RowGroup {
    /// Interleaves rows `rows` (at most eight) of `w`.
    fn fill<M: SignedBlocks + ?Sized>(
        &mut self,
        kernel: Kernel,
        w: &M,
        rows: std::ops::Range<usize>,
    ) {
        assert!(rows.len() <= GROUP, "a group holds at most {GROUP} rows");
        let nb = w.blocks_per_row();
        self.blocks = nb;
        // Four codes at a time, as one u32 of the interleaved layout; 0x80 in each byte adds
        // 128 to each code (mod 256).
        self.codes.clear();
        self.codes.resize(nb * BLOCK_BYTES / 4, 0x8080_8080);
        self.scales.clear();
        self.scales.resize(nb * GROUP, 0.0);
        for (i, r) in rows.enumerate() {
            for b in 0..nb {
                let codes = w.block_codes(kernel, r * nb + b);
                for (k, four) in codes.chunks_exact(4).enumerate() {
                    let four = u32::from_le_bytes([
                        four[0] as u8,
                        four[1] as u8,
                        four[2] as u8,
                        four[3] as u8,
                    ]);
                    self.codes[(b * 8 + k) * GROUP + i] = four ^ 0x8080_8080;
                }
                self.scales[b * GROUP + i] = w.block_scale(r * nb + b);
            }
        }
    }
}

/// `put(t, rows.start, values)` for rows `rows` (at most [`GROUP`]) of `w` and every token
/// `t < m` of a prompt, the rows interleaved once for all the tokens.
pub(super) fn signed_rows_against_tokens<M: SignedBlocks + ?Sized>(
    kernel: Kernel,
    w: &M,
    rows: std::ops::Range<usize>,
    x: &Q8_0Rows,
    m: usize,
    put: &mut dyn FnMut(usize, usize, &[f32]),
) {
    let nb = x.blocks;
    assert!(
        w.blocks_per_row() == nb
            && x.qs.len() == x.d.len() * 32
            && x.sums.len() == x.d.len()
            && m * nb <= x.d.len(),
        "the activations do not match the matrix"
    );
    thread_local! {
        static BUFFER: std::cell::RefCell<RowGroup> = std::cell::RefCell::new(RowGroup::default());
    }
    BUFFER.with(|g| {
        let g = &mut g.borrow_mut();
        g.fill(kernel, w, rows.clone());
        let mut t = 0;
        while t < m {
            // A last, partial tile repeats its last token rather than reading past the prompt.
            let tokens = [0, 1, 2, 3].map(|i| (t + i).min(m - 1));
            let v = match kernel {
                Kernel::Scalar => tokens.map(|t| group_scalar(g, x, t)),
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has the features (Kernel::available); the group holds nb
                // blocks (fill) and every token is a row of x (checked above).
                Kernel::Avx2 => unsafe { x86::group_avx2(g, x, tokens) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                Kernel::AvxVnni => unsafe { x86::group_avxvnni(g, x, tokens) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: as above.
                Kernel::Avx512Vnni => unsafe { x86::group_avx512vnni(g, x, tokens) },
            };
            for (j, v) in v.iter().enumerate().take(m - t) {
                put(t + j, rows.start, &v[..rows.len()]);
            }
            t += 4;
        }
    });
}

/// The definition on a group, token `t`: each row's exact block sums, scaled and added block by
/// block. The reference of the SIMD kernels, and the kernel of CPUs without them.
fn group_scalar(g: &RowGroup, x: &Q8_0Rows, t: usize) -> [f32; GROUP] {
    let mut out = [0f32; GROUP];
    for b in 0..g.blocks {
        let xb = t * g.blocks + b;
        let xq = &x.qs[xb * 32..][..32];
        for (i, o) in out.iter_mut().enumerate() {
            let mut sum = 0i32;
            for (k, xs) in xq.chunks_exact(4).enumerate() {
                let four = (g.codes[(b * 8 + k) * GROUP + i] ^ 0x8080_8080).to_le_bytes();
                sum += four
                    .iter()
                    .zip(xs)
                    .map(|(&q, &x)| q as i8 as i32 * x as i32)
                    .sum::<i32>();
            }
            *o += sum as f32 * (g.scales[b * GROUP + i] * x.d[xb]);
        }
    }
    out
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{RowGroup, BLOCK_BYTES, GROUP};
    use crate::model::q8_0::Q8_0Rows;
    use std::arch::x86_64::*;

    /// Four tokens against a group: `[token][row]`.
    macro_rules! group_kernel {
        ($name:ident, $features:literal, excess: $excess:literal, |$acc:ident, $w:ident, $x:ident| $dpbusd:expr) => {
            /// # Safety
            /// The CPU must have the enabled features; the group must hold `x.blocks` blocks
            /// and every token be a row of `x`.
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name(
                g: &RowGroup,
                x: &Q8_0Rows,
                tokens: [usize; 4],
            ) -> [[f32; GROUP]; 4] {
                // SAFETY: every read is inside block b of the group (BLOCK_BYTES codes, GROUP
                // scales) or inside block b of a token's activations (32 codes, a scale, a sum).
                unsafe {
                    let nb = x.blocks;
                    let mut acc = [_mm256_setzero_ps(); 4];
                    for b in 0..nb {
                        let codes = g.codes.as_ptr().add(b * BLOCK_BYTES / 4) as *const u8;
                        let xq = tokens.map(|t| x.qs.as_ptr().add((t * nb + b) * 32));
                        // Two sums per token (even and odd chunks): more independent chains.
                        let mut sums = [[_mm256_setzero_si256(); 2]; 4];
                        for k in 0..8 {
                            let $w = _mm256_loadu_si256(codes.add(k * 32) as *const __m256i);
                            for j in 0..4 {
                                let four = (xq[j].add(4 * k) as *const i32).read_unaligned();
                                let $x = _mm256_set1_epi32(four);
                                let $acc = sums[j][k % 2];
                                sums[j][k % 2] = $dpbusd;
                            }
                        }
                        let dw = _mm256_loadu_ps(g.scales.as_ptr().add(b * GROUP));
                        for j in 0..4 {
                            let xb = tokens[j] * nb + b;
                            let excess = _mm256_set1_epi32($excess * *x.sums.get_unchecked(xb));
                            let exact =
                                _mm256_sub_epi32(_mm256_add_epi32(sums[j][0], sums[j][1]), excess);
                            let scale = _mm256_mul_ps(dw, _mm256_set1_ps(*x.d.get_unchecked(xb)));
                            acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(exact), scale, acc[j]);
                        }
                    }
                    let mut out = [[0f32; GROUP]; 4];
                    for j in 0..4 {
                        _mm256_storeu_ps(out[j].as_mut_ptr(), acc[j]);
                    }
                    out
                }
            }
        };
    }

    group_kernel!(group_avx2, "avx2,fma", excess: 0, |acc, w, x| {
        // No u8 × i8 sum of four here: AVX2's maddubs sums pairs into i16, where (q + 128)·q_x
        // could overflow. The codes get their sign back (w ^ 0x80 = q) and the sign trick
        // keeps every pair within i16, as in the tile kernels: no excess to take off.
        let q = _mm256_xor_si256(w, _mm256_set1_epi8(0x80u8 as i8));
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(x, q));
        _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
    });
    group_kernel!(group_avxvnni, "avx2,fma,avxvnni", excess: 128, |acc, w, x| {
        _mm256_dpbusd_avx_epi32(acc, w, x)
    });
    group_kernel!(
        group_avx512vnni,
        "avx2,fma,avx512vnni,avx512vl",
        excess: 128,
        |acc, w, x| _mm256_dpbusd_epi32(acc, w, x)
    );
}

#[cfg(test)]
mod tests {
    use crate::model::q5_0::Q5_0Matrix;
    use crate::model::q8_0::{matmul_partners, Q8Partner, Q8_0Matrix};
    use crate::model::simd::Kernel;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    fn random(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..n)
            .map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * 3.0)
            .collect()
    }

    /// A random matrix in `format`, as the file stores it (candle's quantizer).
    fn bytes(rows: usize, cols: usize, format: GgmlDType) -> Vec<u8> {
        let t = Tensor::from_vec(random(rows * cols, 3), (rows, cols), &Device::Cpu).unwrap();
        QTensor::quantize(&t, format)
            .unwrap()
            .data()
            .unwrap()
            .to_vec()
    }

    /// A prompt's rows go in groups of eight, a generated token's in tiles: exact block sums
    /// both, added in another order, so the same numbers to float rounding, for each format.
    #[test]
    fn prompt_groups_equal_single_token_tiles() {
        let (rows, cols, m) = (13, 96, 11);
        let q8 = Q8_0Matrix::from_bytes(&bytes(rows, cols, GgmlDType::Q8_0), rows, cols).unwrap();
        let q5 = Q5_0Matrix::from_bytes(&bytes(rows, cols, GgmlDType::Q5_0), rows, cols).unwrap();
        let x = random(m * cols, 11);
        for (name, w) in [
            ("Q8_0", Q8Partner::Q8_0(&q8)),
            ("Q5_0", Q8Partner::Q5_0(&q5)),
        ] {
            for kernel in Kernel::available() {
                let mut all = vec![0f32; m * rows];
                matmul_partners(kernel, &[w], &x, m, &mut [&mut all]);
                for t in 0..m {
                    let mut one = vec![0f32; rows];
                    matmul_partners(kernel, &[w], &x[t * cols..][..cols], 1, &mut [&mut one]);
                    let prompt = &all[t * rows..][..rows];
                    for (a, b) in prompt.iter().zip(&one) {
                        let close = (a - b).abs() <= 1e-5 * a.abs().max(1.0);
                        assert!(close, "{name} {kernel:?} token {t}: {a} vs {b}");
                    }
                }
            }
        }
    }
}
