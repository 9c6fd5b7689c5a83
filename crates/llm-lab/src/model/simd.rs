//! What this crate's quantized products share: which SIMD kernel the CPU runs, and how a
//! product's rows are shared out among candle's worker threads in tiles.
//!
//! Each format (`q4_1.rs`, `q8_0.rs`, …) only says how to multiply a tile of its rows by a tile
//! of tokens ([`Tiled`]); [`matmul_many`] hands the tiles out.

/// Which dot-product implementation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    Scalar,
    /// maddubs/madd: any x86-64 CPU of the last decade.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// VNNI's `dpbusd` does the u8 × i8 products and their sums in one instruction: recent
    /// laptops (AVX-VNNI) and servers (AVX-512 VNNI).
    #[cfg(target_arch = "x86_64")]
    AvxVnni,
    #[cfg(target_arch = "x86_64")]
    Avx512Vnni,
}

impl Kernel {
    /// Every kernel this CPU can run, slowest first.
    pub(super) fn available() -> Vec<Kernel> {
        #[allow(unused_mut)]
        let mut kernels = vec![Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
        {
            kernels.push(Kernel::Avx2);
            if is_x86_feature_detected!("avxvnni") {
                kernels.push(Kernel::AvxVnni);
            }
            if is_x86_feature_detected!("avx512vnni") && is_x86_feature_detected!("avx512vl") {
                kernels.push(Kernel::Avx512Vnni);
            }
        }
        kernels
    }

    /// The fastest kernel this CPU runs, detected once; `LLM_LAB_KERNEL=scalar|avx2|avxvnni|avx512vnni`
    /// picks a slower one instead (to compare them, or as a laptop without VNNI would run). Every
    /// format's product follows the same choice.
    pub fn best() -> Kernel {
        static BEST: std::sync::OnceLock<Kernel> = std::sync::OnceLock::new();
        *BEST.get_or_init(|| {
            let available = Kernel::available();
            let fastest = *available.last().expect("the scalar kernel always runs");
            match std::env::var("LLM_LAB_KERNEL") {
                Ok(name) => available.into_iter().find(|k| format!("{k:?}").eq_ignore_ascii_case(&name)).unwrap_or_else(|| {
                    eprintln!("llm-lab: LLM_LAB_KERNEL={name} is not one this CPU runs; using {fastest:?}");
                    fastest
                }),
                Err(_) => fastest,
            }
        })
    }
}

/// A quantized matrix whose rows multiply activations already rounded to its partner format.
pub(super) trait Tiled: Sync {
    /// The activations, rounded once per product.
    type Activations: Sync;
    /// Output width.
    fn rows(&self) -> usize;
    /// Dot products of rows `rows` with token rows `tokens`: `R × T` results. Panics (never reads
    /// out of bounds) when an index is out of range.
    fn tile<const R: usize, const T: usize>(
        &self,
        kernel: Kernel,
        rows: [usize; R],
        x: &Self::Activations,
        tokens: [usize; T],
    ) -> [[f32; T]; R];

    /// Rows `rows` (at most [`PROMPT_ROWS`]) against every token `0..m` of a prompt: for each
    /// token `t`, `put(t, r, values)` gives rows `r..r + values.len()`. By default row by row in
    /// tiles of four tokens; formats with signed codes unpack the rows once for all the tokens
    /// instead (`row_group::signed_rows_against_tokens`).
    fn rows_against_tokens(
        &self,
        kernel: Kernel,
        rows: std::ops::Range<usize>,
        x: &Self::Activations,
        m: usize,
        put: &mut dyn FnMut(usize, usize, &[f32]),
    ) {
        // Per token, the item's rows are consecutive outputs: one `put` per token and tile.
        let n = rows.len();
        assert!(n <= PROMPT_ROWS, "at most {PROMPT_ROWS} rows per work item");
        let mut t = 0;
        while t < m {
            let k = 4.min(m - t);
            let mut v = [[0f32; PROMPT_ROWS]; 4];
            for (i, r) in rows.clone().enumerate() {
                if k == 4 {
                    let tile = self.tile::<1, 4>(kernel, [r], x, [t, t + 1, t + 2, t + 3]);
                    (0..4).for_each(|j| v[j][i] = tile[0][j]);
                } else {
                    (0..k).for_each(|j| v[j][i] = self.tile::<1, 1>(kernel, [r], x, [t + j])[0][0]);
                }
            }
            (0..k).for_each(|j| put(t + j, rows.start, &v[j][..n]));
            t += 4;
        }
    }
}

/// Formats whose blocks are 32 signed codes and a scale (Q8_0, Q5_0): what a prompt unpacks.
pub(super) trait SignedBlocks: Sync {
    fn blocks_per_row(&self) -> usize;
    /// Block `wb`'s codes (blocks counted over the whole matrix), unpacked with `kernel`'s
    /// instructions.
    fn block_codes(&self, kernel: Kernel, wb: usize) -> [i8; 32];
    fn block_scale(&self, wb: usize) -> f32;
}

/// Rows per work item on a prompt: a group of `row_group`'s kernels.
pub(super) const PROMPT_ROWS: usize = super::row_group::GROUP;

/// `ys[k] = x · Wₖᵀ` for `m` tokens of activations `x` that every matrix reads: all their rows are
/// shared out among the workers in one go.
///
/// Work items are tiles of four rows while generating (one token against four rows) and groups
/// of [`PROMPT_ROWS`] rows on a prompt (each against every token). Each worker takes whole rows and
/// runs them against every token, so each row is read from memory once per call.
pub(super) fn matmul_many<M: Tiled>(
    kernel: Kernel,
    ws: &[&M],
    x: &M::Activations,
    m: usize,
    ys: &mut [&mut [f32]],
) {
    assert_eq!(ws.len(), ys.len(), "one output per matrix");
    for (w, y) in ws.iter().zip(ys.iter()) {
        assert!(y.len() == m * w.rows(), "y must be [m, rows]");
    }
    let rows_per_item = if m < 4 { 4 } else { PROMPT_ROWS };
    let items: Vec<usize> = ws
        .iter()
        .map(|w| w.rows().div_ceil(rows_per_item))
        .collect();
    let starts: Vec<usize> = items
        .iter()
        .scan(0, |acc, &n| {
            let s = *acc;
            *acc += n;
            Some(s)
        })
        .collect();
    let outputs: Vec<SharedRows> = ys
        .iter_mut()
        .zip(ws)
        .map(|(y, w)| SharedRows::new(y, w.rows()))
        .collect();
    candle_core::utils::barrier_pool().execute_chunked(items.iter().sum(), |range| {
        for item in range {
            let k = starts.partition_point(|&s| s <= item) - 1;
            let (w, rows) = (ws[k], ws[k].rows());
            let r = (item - starts[k]) * rows_per_item;
            // SAFETY: this work item owns rows r..r + rows_per_item of output k: no other
            // worker writes them (items are disjoint row ranges), and `put` writes no other row.
            let put = |t: usize, row: usize, v: f32| unsafe { outputs[k].put(t, row, v) };
            if m < 4 {
                for t in 0..m {
                    if r + 4 <= rows {
                        let v = w.tile::<4, 1>(kernel, [r, r + 1, r + 2, r + 3], x, [t]);
                        (0..4).for_each(|i| put(t, r + i, v[i][0]));
                    } else {
                        (r..rows)
                            .for_each(|r| put(t, r, w.tile::<1, 1>(kernel, [r], x, [t])[0][0]));
                    }
                }
            } else {
                let end = (r + PROMPT_ROWS).min(rows);
                w.rows_against_tokens(kernel, r..end, x, m, &mut |t, first, values| {
                    assert!(
                        first >= r && first + values.len() <= end,
                        "a row outside the work item"
                    );
                    for (i, &v) in values.iter().enumerate() {
                        put(t, first + i, v);
                    }
                });
            }
        }
    });
}

/// An output matrix `[m, rows]` that the workers fill together. Work is shared out by whole
/// rows: the worker that owns row `r` writes `(t, r)` for every token `t`, and nobody else
/// touches that row until every worker is done (`execute_chunked` returns only then).
pub(super) struct SharedRows {
    ptr: *mut f32,
    rows: usize,
    len: usize,
}

// SAFETY: workers write disjoint rows through `put` (whose contract says so) and nothing reads
// the buffer while they run; the borrow it came from outlives the parallel section.
unsafe impl Sync for SharedRows {}
// SAFETY: as for Sync: a pointer to a buffer that outlives every worker.
unsafe impl Send for SharedRows {}

impl SharedRows {
    pub(super) fn new(y: &mut [f32], rows: usize) -> Self {
        SharedRows {
            ptr: y.as_mut_ptr(),
            rows,
            len: y.len(),
        }
    }

    /// Writes element `(t, r)`.
    ///
    /// # Safety
    /// Only the worker that owns row `r` may call this for row `r`.
    pub(super) unsafe fn put(&self, t: usize, r: usize, v: f32) {
        let i = t * self.rows + r;
        assert!(r < self.rows && i < self.len, "output element out of range");
        // SAFETY: in bounds (checked above); no other thread writes row r (the caller's contract).
        unsafe { *self.ptr.add(i) = v }
    }
}

/// Defines `tile_avx2`, `tile_avxvnni` and `tile_avx512vnni` in the calling module, the `R × T`
/// tile kernels of a format whose blocks unpack to 32 signed codes `q_w` (`$codes`: block `$wb`
/// of matrix `$m` as an `__m256i`) with an f16 scale (`$m.d[$wb]`), against activations rounded
/// to Q8_0 (`q8_0::Q8_0Rows`). The integer sums take x86's u8 × i8 instructions (AVX2's
/// `maddubs`, VNNI's `dpbusd`) on `|q_w|` and `q_x` with `q_w`'s sign. Block by block: each row's
/// codes are unpacked once for every token, each token's loaded once for every row, and a block
/// costs one conversion and one FMA per row and token. The caller imports `std::arch::x86_64::*`.
#[cfg(target_arch = "x86_64")]
macro_rules! signed_tile_kernel {
    (@one $name:ident, $features:literal, $matrix:ty, |$m:ident, $wb:ident| $codes:expr, $prefetch:expr, |$w:ident, $x:ident| $block_sums:expr) => {
        /// # Safety
        /// The CPU must have the enabled features; rows and tokens must be in range of the
        /// matrix and the activations, which must have the matrix's blocks per row.
        #[target_feature(enable = $features)]
        pub(super) unsafe fn $name<const R: usize, const T: usize>(
            w: &$matrix,
            rows: [usize; R],
            x: &$crate::model::q8_0::Q8_0Rows,
            tokens: [usize; T],
        ) -> [[f32; T]; R] {
            // SAFETY: the caller checked every row and token index against the matrix's and the
            // activations' block counts; every load reads one whole block.
            unsafe {
                let nb = x.blocks;
                let mut acc = [[_mm256_setzero_ps(); T]; R];
                for b in 0..nb {
                    let mut xq = [_mm256_setzero_si256(); T];
                    let mut xd = [0f32; T];
                    for j in 0..T {
                        let xb = tokens[j] * nb + b;
                        xq[j] = _mm256_loadu_si256(x.qs.as_ptr().add(xb * 32) as *const __m256i);
                        xd[j] = *x.d.get_unchecked(xb);
                    }
                    for i in 0..R {
                        let $m = w;
                        {
                            // The same block PREFETCH_ROWS rows on, which this worker reads next:
                            // asked for now, it is in cache when its turn comes (a single token's
                            // product is bound by memory, and the hardware alone keeps too few
                            // reads in flight). Prefetches past the end are harmless: they never fault.
                            let $wb = (rows[i] + $crate::model::simd::PREFETCH_ROWS) * nb + b;
                            $prefetch;
                        }
                        let $wb = rows[i] * nb + b;
                        let wq: __m256i = $codes;
                        let dw = $crate::model::simd::f16_to_f32(*w.d.get_unchecked($wb));
                        let $w = _mm256_sign_epi8(wq, wq);
                        for j in 0..T {
                            let $x = _mm256_sign_epi8(xq[j], wq);
                            let sums: __m256i = $block_sums;
                            acc[i][j] = _mm256_fmadd_ps(
                                _mm256_cvtepi32_ps(sums),
                                _mm256_set1_ps(dw * xd[j]),
                                acc[i][j],
                            );
                        }
                    }
                }
                let mut out = [[0f32; T]; R];
                for i in 0..R {
                    for j in 0..T {
                        out[i][j] = hsum(acc[i][j]);
                    }
                }
                out
            }
        }
    };
    ($matrix:ty, |$m:ident, $wb:ident| $codes:expr, prefetch: $prefetch:expr) => {
        signed_tile_kernel!(@one tile_avx2, "avx2,fma,f16c", $matrix, |$m, $wb| $codes, $prefetch, |aw, sx| {
            // |q_w| ≤ 128 and |q_x| ≤ 127: a pair of products stays within i16 (≤ 32,512).
            _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1))
        });
        signed_tile_kernel!(@one tile_avxvnni, "avx2,fma,f16c,avxvnni", $matrix, |$m, $wb| $codes, $prefetch, |aw, sx| {
            _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), aw, sx)
        });
        signed_tile_kernel!(@one tile_avx512vnni, "avx2,fma,f16c,avx512vnni,avx512vl", $matrix, |$m, $wb| $codes, $prefetch, |aw, sx| {
            _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sx)
        });

        #[target_feature(enable = "avx2")]
        fn hsum(v: __m256) -> f32 {
            let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
            let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
            let s = _mm_add_ss(s, _mm_movehdup_ps(s));
            _mm_cvtss_f32(s)
        }
    };
}
#[cfg(target_arch = "x86_64")]
pub(super) use signed_tile_kernel;

/// How many rows ahead the tile kernels prefetch: two 4-row tiles, a few KB on.
pub(super) const PREFETCH_ROWS: usize = 8;

/// `v` (|v| ≤ 127 when finite) rounded to the nearest integer code, ties to even as llama.cpp's
/// x86 quantizers round (`_mm256_round_ps`): adding and subtracting 1.5·2²³ leaves no fraction,
/// in two operations that vectorise, where `f32::round` is a library call per element.
#[inline(always)]
pub(super) fn round_code(v: f32) -> i8 {
    ((v + 12_582_912.0) - 12_582_912.0) as i8
}

/// f16 bits → f32, exactly, in a few inlined operations (a library call per block would cost more
/// than the block's arithmetic): move exponent and mantissa into f32's fields, then rescale the
/// exponent bias by 2¹¹²; subnormals come out right from the same multiplication.
#[inline]
pub(super) fn f16_to_f32(bits: u16) -> f32 {
    let sign = ((bits & 0x8000) as u32) << 16;
    let magnitude = if bits & 0x7C00 == 0x7C00 {
        // Infinity or NaN: keep the payload, saturate the exponent.
        f32::from_bits(0x7F80_0000 | (((bits & 0x03FF) as u32) << 13))
    } else {
        f32::from_bits(((bits & 0x7FFF) as u32) << 13) * f32::from_bits(0x7780_0000)
        // 2^112
    };
    f32::from_bits(magnitude.to_bits() | sign)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_conversion_is_exact_for_every_bit_pattern() {
        for bits in 0..=u16::MAX {
            let (ours, theirs) = (f16_to_f32(bits), half::f16::from_bits(bits).to_f32());
            assert!(
                ours.to_bits() == theirs.to_bits() || (ours.is_nan() && theirs.is_nan()),
                "{bits:#06x}: {ours} vs {theirs}"
            );
        }
    }

    #[test]
    fn codes_round_to_nearest_ties_to_even() {
        for i in -127_000..=127_000 {
            let v = i as f32 * 1e-3;
            assert_eq!(round_code(v), v.round_ties_even() as i8, "{v}");
        }
        assert_eq!(
            [0.5, 1.5, 2.5, -0.5, -2.5].map(round_code),
            [0, 2, 2, 0, -2]
        );
        assert_eq!(
            [f32::NAN, f32::INFINITY, -1e30].map(round_code),
            [0, 127, -128]
        );
    }

    #[test]
    fn the_scalar_kernel_always_runs_and_best_is_available() {
        let available = Kernel::available();
        assert_eq!(available[0], Kernel::Scalar);
        assert!(available.contains(&Kernel::best()));
    }
}
