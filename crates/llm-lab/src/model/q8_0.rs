//! Q8_0 weight matrices with SIMD CPU products: the token embedding of both models, and so their
//! tied output projection (Gemma's is 262,144 × 640, more multiply-adds per token than its 18
//! layers together).
//!
//! Q8_0 (llama.cpp's 8-bit format) stores each run of 32 weights as a scale `d` (f16) and 32
//! signed codes: `w = d·q`. Activations are rounded to the same format (a scale per block of 32,
//! `d = max|x| / 127`), so a product is, as llama.cpp defines it,
//!
//! `Σ w·x ≈ Σ_blocks d_w·d_x·Σ q_w·q_x`.
//!
//! The integer sums use x86's u8 × i8 instructions (AVX2's `maddubs`, VNNI's `dpbusd`) on
//! `|q_w|` and `q_x` with `q_w`'s sign, picked at run time with the other formats' kernels
//! ([`Kernel`]); elsewhere the definition, written for the compiler to vectorise. The matrix is
//! read from the file straight into its layout ([`Q8_0Matrix::from_gguf`]), and an embedding
//! lookup dequantizes only the rows it needs.

use super::simd::{self, f16_to_f32, Kernel, Tiled};
use crate::error::Result;
use crate::gguf::Gguf;

/// Weights per block.
pub const BLOCK: usize = 32;
/// Bytes per stored block: an f16 scale and 32 codes.
const BLOCK_BYTES: usize = 34;

/// A `[rows, cols]` matrix of Q8_0 blocks, row-major, as two parallel arrays.
#[derive(Debug, Clone)]
pub struct Q8_0Matrix {
    rows: usize,
    cols: usize,
    /// Per block: the scale `d` as f16 bits.
    d: Vec<u16>,
    /// Per block, the 32 codes in order.
    qs: Vec<i8>,
}

/// Activations rounded to Q8_0, per token row (also the partner of Q5_0 weights).
pub(super) struct Q8_0Rows {
    /// Blocks per token row.
    pub(super) blocks: usize,
    /// Per block: the scale, widened from the f16 the format rounds it to.
    pub(super) d: Vec<f32>,
    /// Per block, 32 codes.
    pub(super) qs: Vec<i8>,
    /// Per block, the sum of its codes (`row_group`'s kernels need it).
    pub(super) sums: Vec<i32>,
}

impl Q8_0Matrix {
    /// An empty matrix with room for `rows × cols` weights; `None` if the sizes are not whole
    /// blocks or overflow.
    fn with_capacity(rows: usize, cols: usize) -> Option<Self> {
        if cols == 0 || !cols.is_multiple_of(BLOCK) {
            return None;
        }
        let n = rows.checked_mul(cols / BLOCK)?;
        Some(Q8_0Matrix {
            rows,
            cols,
            d: Vec::with_capacity(n),
            qs: Vec::with_capacity(n.checked_mul(BLOCK)?),
        })
    }

    /// Appends whole stored blocks.
    fn push_blocks(&mut self, bytes: &[u8]) {
        for b in bytes.chunks_exact(BLOCK_BYTES) {
            self.d.push(u16::from_le_bytes([b[0], b[1]]));
            self.qs.extend(b[2..].iter().map(|&q| q as i8));
        }
    }

    fn is_complete(&self) -> bool {
        self.d.len() * BLOCK == self.rows * self.cols && self.qs.len() == self.rows * self.cols
    }

    /// The matrix from GGUF's bytes (34 per block, row-major); `None` if the sizes disagree.
    /// Tests build matrices so; the loader reads the file piece by piece (`from_gguf`).
    #[cfg(test)]
    pub fn from_bytes(bytes: &[u8], rows: usize, cols: usize) -> Option<Self> {
        let mut m = Self::with_capacity(rows, cols)?;
        if bytes.len() != m.d.capacity().checked_mul(BLOCK_BYTES)? {
            return None;
        }
        m.push_blocks(bytes);
        Some(m)
    }

    /// Tensor `name` of a GGUF file, `[rows, cols]`, read piece by piece into this layout: the
    /// file's bytes are never all in memory beside it (Gemma's embedding is 178 MB).
    pub(crate) fn from_gguf(g: &mut Gguf, name: &str, rows: usize, cols: usize) -> Result<Self> {
        let path = g.path.clone();
        let bad = || {
            crate::error::Error::model_file(
                &path,
                format!("has a Q8_0 tensor `{name}` of shape [{rows}, {cols}] that is not whole blocks of 32; download the file again"),
            )
        };
        let mut m = Self::with_capacity(rows, cols).ok_or_else(bad)?;
        g.read_raw(name, 1 << 20, |bytes| m.push_blocks(bytes))?;
        if !m.is_complete() {
            return Err(bad());
        }
        Ok(m)
    }

    /// Row `r` dequantized into `out` (`cols` values): an embedding lookup.
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let nb = self.cols / BLOCK;
        for (b, chunk) in out.chunks_exact_mut(BLOCK).enumerate().take(nb) {
            let i = r * nb + b;
            let d = f16_to_f32(self.d[i]);
            for (o, &q) in chunk.iter_mut().zip(&self.qs[i * BLOCK..][..BLOCK]) {
                *o = d * q as f32;
            }
        }
    }
}

/// Rounds each row of `x` to Q8_0 blocks as llama.cpp's x86 quantizer does, to the bit:
/// `d = max|x| / 127` (stored as f16), `q = round(x · (127 / max|x|))`, ties to even
/// ([`simd::round_code`]). (Its portable reference multiplies by `1 / d` and rounds ties away
/// from zero: the last bit of a code differs now and then, and Gemma's greedy continuations
/// follow llama.cpp's more closely with the x86 one.)
pub(super) fn quantize_activations(x: &[f32], cols: usize) -> Q8_0Rows {
    let blocks = cols / BLOCK;
    let n = x.len() / BLOCK;
    let mut out = Q8_0Rows {
        blocks,
        d: Vec::with_capacity(n),
        qs: Vec::with_capacity(n * BLOCK),
        sums: Vec::with_capacity(n),
    };
    for block in x.chunks_exact(BLOCK) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let d = amax / 127.0;
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        out.d.push(half::f16::from_f32(d).to_f32());
        let start = out.qs.len();
        out.qs
            .extend(block.iter().map(|v| simd::round_code(v * id)));
        out.sums
            .push(out.qs[start..].iter().map(|&q| q as i32).sum());
    }
    out
}

/// A matrix whose rows multiply activations rounded to Q8_0: Q8_0 or Q5_0 weights. Matrices that
/// read one input (Gemma's W_Q and W_K in Q5_0, W_V in Q8_0) share one rounding of it and one
/// parallel section, whatever their formats.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Q8Partner<'a> {
    Q8_0(&'a Q8_0Matrix),
    Q5_0(&'a super::q5_0::Q5_0Matrix),
}

impl Q8Partner<'_> {
    fn cols(&self) -> usize {
        match self {
            Q8Partner::Q8_0(m) => m.cols,
            Q8Partner::Q5_0(m) => m.cols(),
        }
    }
}

/// `ys[k] = x · Wₖᵀ` for `x: [m, cols]` and matrices of either partner format: the input is
/// rounded once, every row shared out in one go.
pub(crate) fn matmul_partners(
    kernel: Kernel,
    ws: &[Q8Partner],
    x: &[f32],
    m: usize,
    ys: &mut [&mut [f32]],
) {
    let cols = ws[0].cols();
    assert_eq!(x.len(), m * cols, "x must be [m, cols]");
    assert!(
        ws.iter().all(|w| w.cols() == cols),
        "matrices must share the input width"
    );
    let xq = quantize_activations(x, cols);
    let refs: Vec<&Q8Partner> = ws.iter().collect();
    simd::matmul_many(kernel, &refs, &xq, m, ys);
}

impl Tiled for Q8Partner<'_> {
    type Activations = Q8_0Rows;

    fn rows(&self) -> usize {
        match self {
            Q8Partner::Q8_0(m) => m.rows(),
            Q8Partner::Q5_0(m) => m.rows(),
        }
    }

    fn tile<const R: usize, const T: usize>(
        &self,
        kernel: Kernel,
        rows: [usize; R],
        x: &Q8_0Rows,
        tokens: [usize; T],
    ) -> [[f32; T]; R] {
        match self {
            Q8Partner::Q8_0(m) => m.tile(kernel, rows, x, tokens),
            Q8Partner::Q5_0(m) => m.tile(kernel, rows, x, tokens),
        }
    }

    fn rows_against_tokens(
        &self,
        kernel: Kernel,
        rows: std::ops::Range<usize>,
        x: &Q8_0Rows,
        m: usize,
        put: &mut dyn FnMut(usize, usize, &[f32]),
    ) {
        use super::row_group::signed_rows_against_tokens;
        match self {
            Q8Partner::Q8_0(w) => signed_rows_against_tokens(kernel, *w, rows, x, m, put),
            Q8Partner::Q5_0(w) => signed_rows_against_tokens(kernel, *w, rows, x, m, put),
        }
    }
}

impl Tiled for Q8_0Matrix {
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
            "Q8_0 tile out of range: the activations do not match the matrix"
        );
        match kernel {
            Kernel::Scalar => rows.map(|r| tokens.map(|t| dot_scalar(self, r, x, t))),
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

impl simd::SignedBlocks for Q8_0Matrix {
    fn blocks_per_row(&self) -> usize {
        self.cols / BLOCK
    }

    fn block_codes(&self, _kernel: Kernel, wb: usize) -> [i8; BLOCK] {
        self.qs[wb * BLOCK..][..BLOCK]
            .try_into()
            .expect("a block is 32 codes")
    }

    fn block_scale(&self, wb: usize) -> f32 {
        f16_to_f32(self.d[wb])
    }
}

/// The definition, block by block: exact integer sums, then one scaled float addition per block.
fn dot_scalar(w: &Q8_0Matrix, r: usize, x: &Q8_0Rows, t: usize) -> f32 {
    let nb = w.cols / BLOCK;
    let mut sum = 0f32;
    for b in 0..nb {
        let (wb, xb) = (r * nb + b, t * nb + b);
        let wq = &w.qs[wb * BLOCK..][..BLOCK];
        let xq = &x.qs[xb * BLOCK..][..BLOCK];
        let qq: i32 = wq.iter().zip(xq).map(|(&a, &b)| a as i32 * b as i32).sum();
        sum += qq as f32 * (f16_to_f32(w.d[wb]) * x.d[xb]);
    }
    sum
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Q8_0Matrix, BLOCK};
    use crate::model::simd::signed_tile_kernel;
    use std::arch::x86_64::*;

    signed_tile_kernel!(
        Q8_0Matrix,
        |m, wb| _mm256_loadu_si256(m.qs.as_ptr().add(wb * BLOCK) as *const __m256i),
        prefetch: _mm_prefetch::<_MM_HINT_T0>(m.qs.as_ptr().wrapping_add(wb * BLOCK))
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::{GgmlDType, QTensor};
    use candle_core::{Device, Tensor};

    /// `y = x · Wᵀ`, as the model runs it.
    fn matmul(kernel: Kernel, w: &Q8_0Matrix, x: &[f32], m: usize, y: &mut [f32]) {
        matmul_partners(kernel, &[Q8Partner::Q8_0(w)], x, m, &mut [y]);
    }

    fn random(n: usize, seed: u64, scale: f32) -> Vec<f32> {
        let mut rng = crate::rng::Rng::new(seed);
        (0..n)
            .map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * scale)
            .collect()
    }

    /// The file's bytes, as candle's quantizer writes them.
    fn matrix(rows: usize, cols: usize, seed: u64) -> (Q8_0Matrix, QTensor) {
        let t =
            Tensor::from_vec(random(rows * cols, seed, 0.5), (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, GgmlDType::Q8_0).unwrap();
        let m = Q8_0Matrix::from_bytes(&q.data().unwrap(), rows, cols).unwrap();
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

    /// Integer sums exact: codes at the format's extremes (−128 included, which the sign trick
    /// must survive), scales of 1, so every kernel's result is an exact integer.
    #[test]
    fn integer_dot_products_are_exact_on_extreme_codes() {
        let (rows, cols, m) = (9, 96, 5);
        let one = half::f16::from_f32(1.0).to_bits().to_le_bytes();
        let mut rng = crate::rng::Rng::new(5);
        let mut bytes = vec![];
        for _ in 0..rows * cols / BLOCK {
            bytes.extend_from_slice(&one);
            bytes.extend(
                (0..BLOCK).map(|_| [0x80u8, 0x81, 0x7F, 0, 1, 0xFF][(rng.next_u64() % 6) as usize]),
            );
        }
        let w = Q8_0Matrix::from_bytes(&bytes, rows, cols).unwrap();
        // Activations that round to ±127 and small codes, with a scale of exactly 1.
        let x: Vec<f32> = (0..m * cols)
            .map(|i| [127.0, -127.0, 3.0, -1.0, 0.0][(i * 7 + i / 5) % 5])
            .collect();
        let xq = quantize_activations(&x, cols);
        assert!(xq.d.iter().all(|&d| d == 1.0));
        for kernel in Kernel::available() {
            for tokens in [1, m] {
                let mut y = vec![0f32; tokens * rows];
                matmul(kernel, &w, &x[..tokens * cols], tokens, &mut y);
                for t in 0..tokens {
                    for r in 0..rows {
                        let want: i64 = (0..cols)
                            .map(|c| w.qs[r * cols + c] as i64 * xq.qs[t * cols + c] as i64)
                            .sum();
                        assert_eq!(y[t * rows + r], want as f32, "{kernel:?} ({t}, {r})");
                    }
                }
            }
        }
    }

    /// Every kernel against the definition (dequantized weights × Q8_0-rounded activations, f64
    /// sums) and against the exact f32 product, on odd shapes: row counts that leave partial
    /// tiles, token counts on both sides of the 4-token tile, one block per row.
    #[test]
    fn every_kernel_and_tile_equals_the_definition() {
        for (rows, cols) in [(37, 64), (6, 640), (3, 32), (9, 576)] {
            let (w, _) = matrix(rows, cols, rows as u64);
            for kernel in Kernel::available() {
                for m in [1, 2, 4, 7] {
                    let x = random(m * cols, 99 + m as u64, 3.0);
                    let mut y = vec![0f32; m * rows];
                    matmul(kernel, &w, &x, m, &mut y);
                    let xq = quantize_activations(&x, cols);
                    let mut wr = vec![0f32; cols];
                    for r in 0..rows {
                        w.dequantize_row(r, &mut wr);
                        for t in 0..m {
                            let def: f64 = (0..cols)
                                .map(|c| {
                                    let xv = xq.qs[t * cols + c] as f64
                                        * xq.d[(t * cols + c) / BLOCK] as f64;
                                    wr[c] as f64 * xv
                                })
                                .sum();
                            let exact: f64 = (0..cols)
                                .map(|c| wr[c] as f64 * x[t * cols + c] as f64)
                                .sum();
                            // Rounding an activation to its block's step d moves it by at most
                            // d/2: the product can leave the exact one by Σ |w|·d/2, no more.
                            let bound: f64 = (0..cols)
                                .map(|c| {
                                    wr[c].abs() as f64 * xq.d[(t * cols + c) / BLOCK] as f64 / 2.0
                                })
                                .sum();
                            let got = y[t * rows + r] as f64;
                            let scale = def.abs().max(1.0);
                            assert!(
                                (got - def).abs() / scale < 1e-5,
                                "{kernel:?} {rows}×{cols}, {m} tokens, ({t}, {r}): {got} vs {def}"
                            );
                            assert!(
                                (got - exact).abs() <= bound * 1.001 + 1e-5 * scale,
                                "{kernel:?} {rows}×{cols} ({t}, {r}): {got} vs exact {exact}, bound {bound}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn bad_sizes_are_refused() {
        assert!(Q8_0Matrix::from_bytes(&[0; 34], 1, 31).is_none());
        assert!(Q8_0Matrix::from_bytes(&[0; 33], 1, 32).is_none());
        assert!(Q8_0Matrix::from_bytes(&[0; 34], 1, 32).is_some());
        assert!(Q8_0Matrix::from_bytes(&[0; 34], usize::MAX, 64).is_none());
    }
}
