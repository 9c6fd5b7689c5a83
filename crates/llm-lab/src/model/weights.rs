//! The model's parameters, loaded from a GGUF file or a Hugging Face folder into the same structs.

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};

use super::config::Config;
use super::q4_1::{Kernel, Q4_1Matrix};
use crate::error::{Error, Result};
use crate::gguf::Gguf;

/// A weight matrix `[out, in]`, possibly quantized, applied as `x · Wᵀ`.
#[derive(Debug, Clone)]
pub struct Linear {
    pub(crate) weight: Matrix,
    /// Output width.
    pub out_features: usize,
    /// Input width.
    pub in_features: usize,
    /// Storage format (`F32`, `Q8_0`, `Q4_1`, …).
    pub format: String,
}

/// Where a matrix's numbers live and which kernel multiplies them.
#[derive(Debug, Clone)]
pub(crate) enum Matrix {
    /// candle's own storage and kernels.
    Candle(QMatMul),
    /// Q4_1 blocks as stored, multiplied by this crate's SIMD kernel (candle's is scalar).
    Q4_1(Arc<Q4_1Matrix>),
}

impl Linear {
    fn from_qtensor(q: QTensor) -> Result<Self> {
        let (out_features, in_features) = q.shape().dims2()?;
        let format = format!("{:?}", q.dtype());
        let weight = if q.dtype() == GgmlDType::Q4_1 {
            let m =
                Q4_1Matrix::from_bytes(&q.data()?, out_features, in_features).ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "Q4_1 matrix [{out_features}, {in_features}] has the wrong number of bytes"
                    ))
                })?;
            Matrix::Q4_1(Arc::new(m))
        } else {
            Matrix::Candle(QMatMul::from_qtensor(q)?)
        };
        Ok(Linear {
            weight,
            out_features,
            in_features,
            format,
        })
    }

    fn from_tensor(t: Tensor) -> Result<Self> {
        let (out_features, in_features) = t.dims2()?;
        let format = format!("{:?}", t.dtype()).to_uppercase();
        Ok(Linear {
            weight: Matrix::Candle(QMatMul::Tensor(t.to_dtype(DType::F32)?)),
            out_features,
            in_features,
            format,
        })
    }

    /// `x · Wᵀ`: `[…, in] → […, out]`.
    pub fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.weight {
            Matrix::Candle(q) => candle_core::Module::forward(q, x),
            Matrix::Q4_1(_) => {
                let [y] = Self::forward_many([self], x)?;
                Ok(y)
            }
        }
    }

    /// `[x · W₁ᵀ, x · W₂ᵀ, …]` for matrices that read the same input: the same numbers as
    /// calling [`forward`](Self::forward) on each, in one pass when all are Q4_1.
    ///
    /// ```
    /// use llm_lab::model::weights::Linear;
    /// use llm_lab::testing::{tiny_model, TinySpec};
    /// use llm_lab::candle_core::{quantized::GgmlDType, DType, Device, Tensor};
    /// let (_dir, model) = tiny_model(&TinySpec { format: GgmlDType::Q4_1, ..Default::default() })?;
    /// let b = &model.weights.blocks[0];
    /// let h = Tensor::ones((3, model.config.d_model), DType::F32, &Device::Cpu)?;
    /// let [q, k] = Linear::forward_many([&b.w_q, &b.w_k], &h)?;
    /// let same = |a: &Tensor, b: &Tensor| a.to_vec2::<f32>().unwrap() == b.to_vec2::<f32>().unwrap();
    /// assert!(same(&q, &b.w_q.forward(&h)?) && same(&k, &b.w_k.forward(&h)?));
    /// # Ok::<(), llm_lab::Error>(())
    /// ```
    pub fn forward_many<const N: usize>(
        linears: [&Linear; N],
        x: &Tensor,
    ) -> candle_core::Result<[Tensor; N]> {
        let q4_1: Option<Vec<&Q4_1Matrix>> = linears
            .iter()
            .map(|l| match &l.weight {
                Matrix::Q4_1(m) if l.in_features == linears[0].in_features => Some(m.as_ref()),
                _ => None,
            })
            .collect();
        let Some(matrices) = q4_1 else {
            return all_ok(linears.map(|l| l.forward(x)));
        };
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let rows = x.elem_count() / linears[0].in_features;
        let mut ys: Vec<Vec<f32>> = linears
            .iter()
            .map(|l| vec![0f32; rows * l.out_features])
            .collect();
        let mut outs: Vec<&mut [f32]> = ys.iter_mut().map(|y| y.as_mut_slice()).collect();
        super::with_cpu_f32(&x, |data, layout| {
            let xs = &data[layout.start_offset()..][..x.elem_count()];
            super::q4_1::matmul_many(Kernel::best(), &matrices, xs, rows, &mut outs)
        })?;
        let mut ys = ys.into_iter();
        all_ok(linears.map(|l| {
            let mut dims = x.dims().to_vec();
            *dims
                .last_mut()
                .expect("a matrix input has at least one dimension") = l.out_features;
            Tensor::from_vec(ys.next().expect("one output per matrix"), dims, x.device())
        }))
    }

    /// Rows `ids` of the matrix as `f32`, `[len, in]`: the token embedding lookup.
    pub fn embedding(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        match &self.weight {
            Matrix::Candle(q) => q.embedding(ids),
            Matrix::Q4_1(m) => {
                let ids = ids.to_vec1::<u32>()?;
                let mut out = vec![0f32; ids.len() * self.in_features];
                for (&id, row) in ids.iter().zip(out.chunks_exact_mut(self.in_features)) {
                    if id as usize >= self.out_features {
                        candle_core::bail!(
                            "token id {id} is out of range for {} embeddings",
                            self.out_features
                        )
                    }
                    m.dequantize_row(id as usize, row);
                }
                Tensor::from_vec(out, (ids.len(), self.in_features), &Device::Cpu)
            }
        }
    }

    /// The weight as an `f32` tensor `[out, in]` (dequantized), for students to inspect.
    pub fn weight(&self) -> Result<Tensor> {
        Ok(match &self.weight {
            Matrix::Candle(QMatMul::QTensor(q)) => q.dequantize(&q.device())?,
            Matrix::Candle(QMatMul::Tensor(t) | QMatMul::TensorF16(t)) => t.to_dtype(DType::F32)?,
            Matrix::Q4_1(m) => {
                let mut out = vec![0f32; self.out_features * self.in_features];
                for (r, row) in out.chunks_exact_mut(self.in_features).enumerate() {
                    m.dequantize_row(r, row);
                }
                Tensor::from_vec(out, (self.out_features, self.in_features), &Device::Cpu)?
            }
        })
    }

    /// Number of parameters.
    pub fn n_params(&self) -> usize {
        self.out_features * self.in_features
    }

    /// Converts the stored matrix to `format` (a no-op when it already is).
    fn convert(&mut self, format: WeightFormat) -> Result<()> {
        let quantized = matches!(
            &self.weight,
            Matrix::Candle(QMatMul::QTensor(_)) | Matrix::Q4_1(_)
        );
        if quantized && format == WeightFormat::F32 {
            self.weight = Matrix::Candle(QMatMul::Tensor(self.weight()?));
            self.format = "F32".into();
        }
        Ok(())
    }
}

/// `[Ok(a), Ok(b), …]` → `Ok([a, b, …])`, or the first error.
fn all_ok<T, const N: usize>(xs: [candle_core::Result<T>; N]) -> candle_core::Result<[T; N]> {
    let v: Vec<T> = xs.into_iter().collect::<candle_core::Result<_>>()?;
    Ok(v.try_into().ok().expect("N results from N inputs"))
}

/// How the weight matrices are kept in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightFormat {
    /// Exactly the file's numbers: quantized matrices multiply against activations rounded to
    /// 8 bits, as llama.cpp defines its formats (Q4_1 by this crate's SIMD kernel).
    #[default]
    AsStored,
    /// Dequantized to f32: the exact maths of the stored weights, ~6× the memory, slower.
    F32,
}

/// How query and key dimensions are paired for rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs (2i, 2i+1): the layout of GGUF files, whose converter permutes Q and K rows.
    Interleaved,
    /// Pairs (i, i + d/2): the layout of Hugging Face checkpoints.
    HalfSplit,
}

/// One transformer block's parameters.
#[derive(Debug, Clone)]
pub struct BlockWeights {
    /// RMSNorm gain before attention, `[d_model]`.
    pub attn_norm: Tensor,
    /// Query projection W_Q, `[n_heads·d_head, d_model]`.
    pub w_q: Linear,
    /// Key projection W_K, `[n_kv_heads·d_head, d_model]`.
    pub w_k: Linear,
    /// Value projection W_V, `[n_kv_heads·d_head, d_model]`.
    pub w_v: Linear,
    /// Output projection W_O, `[d_model, n_heads·d_head]`.
    pub w_o: Linear,
    /// RMSNorm gain before the MLP, `[d_model]`.
    pub mlp_norm: Tensor,
    /// MLP gate projection, `[d_mlp, d_model]`.
    pub w_gate: Linear,
    /// MLP up projection, `[d_mlp, d_model]`.
    pub w_up: Linear,
    /// MLP down projection, `[d_model, d_mlp]`.
    pub w_down: Linear,
}

/// All parameters of the model.
#[derive(Debug, Clone)]
pub struct Weights {
    /// Token embeddings, `[d_vocab, d_model]`.
    pub embed: Linear,
    /// The blocks, first to last.
    pub blocks: Vec<BlockWeights>,
    /// Final RMSNorm gain, `[d_model]`.
    pub final_norm: Tensor,
    /// Output projection to logits, `[d_vocab, d_model]`; a copy of `embed` when tied.
    pub lm_head: Linear,
    /// RoPE pairing used by these weights.
    pub rope_style: RopeStyle,
}

impl Weights {
    pub(crate) fn from_gguf(g: &mut Gguf, config: &Config, device: &Device) -> Result<Self> {
        let lin = |g: &mut Gguf, name: &str| Linear::from_qtensor(g.tensor(name, device)?);
        let vec = |g: &mut Gguf, name: &str| -> Result<Tensor> {
            Ok(g.tensor(name, device)?.dequantize(device)?)
        };
        let embed = lin(g, "token_embd.weight")?;
        let mut blocks = Vec::with_capacity(config.n_layers);
        for l in 0..config.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            blocks.push(BlockWeights {
                attn_norm: vec(g, &n("attn_norm"))?,
                w_q: lin(g, &n("attn_q"))?,
                w_k: lin(g, &n("attn_k"))?,
                w_v: lin(g, &n("attn_v"))?,
                w_o: lin(g, &n("attn_output"))?,
                mlp_norm: vec(g, &n("ffn_norm"))?,
                w_gate: lin(g, &n("ffn_gate"))?,
                w_up: lin(g, &n("ffn_up"))?,
                w_down: lin(g, &n("ffn_down"))?,
            });
        }
        let final_norm = vec(g, "output_norm.weight")?;
        let lm_head = if g.has("output.weight") {
            lin(g, "output.weight")?
        } else {
            embed.clone()
        };
        let w = Weights {
            embed,
            blocks,
            final_norm,
            lm_head,
            rope_style: RopeStyle::Interleaved,
        };
        w.check_shapes(config, &g.path)?;
        Ok(w)
    }

    pub(crate) fn from_safetensors(
        files: &[std::path::PathBuf],
        config: &Config,
        device: &Device,
    ) -> Result<Self> {
        let mut all = std::collections::HashMap::new();
        for f in files {
            let t = candle_core::safetensors::load(f, device).map_err(|e| {
                Error::model_file(
                    f,
                    format!("is not a readable safetensors file ({e}); download it again"),
                )
            })?;
            all.extend(t);
        }
        let dir = files
            .first()
            .and_then(|f| f.parent())
            .unwrap_or(Path::new("."));
        let mut take = |name: &str| -> Result<Tensor> {
            all.remove(name).ok_or_else(|| {
                Error::model_file(
                    dir,
                    format!("lacks the tensor `{name}`; is it a complete Llama checkpoint?"),
                )
            })
        };
        let embed = Linear::from_tensor(take("model.embed_tokens.weight")?)?;
        let mut blocks = Vec::with_capacity(config.n_layers);
        for l in 0..config.n_layers {
            let p = format!("model.layers.{l}");
            let mut lin = |s: &str| Linear::from_tensor(take(&format!("{p}.{s}.weight"))?);
            blocks.push(BlockWeights {
                w_q: lin("self_attn.q_proj")?,
                w_k: lin("self_attn.k_proj")?,
                w_v: lin("self_attn.v_proj")?,
                w_o: lin("self_attn.o_proj")?,
                w_gate: lin("mlp.gate_proj")?,
                w_up: lin("mlp.up_proj")?,
                w_down: lin("mlp.down_proj")?,
                attn_norm: take(&format!("{p}.input_layernorm.weight"))?.to_dtype(DType::F32)?,
                mlp_norm: take(&format!("{p}.post_attention_layernorm.weight"))?
                    .to_dtype(DType::F32)?,
            });
        }
        let final_norm = take("model.norm.weight")?.to_dtype(DType::F32)?;
        let lm_head = match take("lm_head.weight") {
            Ok(t) => Linear::from_tensor(t)?,
            Err(_) => embed.clone(),
        };
        let w = Weights {
            embed,
            blocks,
            final_norm,
            lm_head,
            rope_style: RopeStyle::HalfSplit,
        };
        w.check_shapes(config, dir)?;
        Ok(w)
    }

    /// Converts every matrix to `format`.
    pub(crate) fn convert(&mut self, format: WeightFormat) -> Result<()> {
        for b in &mut self.blocks {
            for l in [
                &mut b.w_q,
                &mut b.w_k,
                &mut b.w_v,
                &mut b.w_o,
                &mut b.w_gate,
                &mut b.w_up,
                &mut b.w_down,
            ] {
                l.convert(format)?;
            }
        }
        self.embed.convert(format)?;
        self.lm_head.convert(format)
    }

    /// Every matrix must have the shape the config promises, or the forward pass would fail later
    /// with an obscure broadcasting error.
    fn check_shapes(&self, c: &Config, path: &Path) -> Result<()> {
        let (q, kv) = (c.n_heads * c.d_head, c.n_kv_heads * c.d_head);
        let mut expect = vec![
            ("token embeddings", &self.embed, c.d_vocab, c.d_model),
            ("output", &self.lm_head, c.d_vocab, c.d_model),
        ];
        for b in &self.blocks {
            expect.extend([
                ("W_Q", &b.w_q, q, c.d_model),
                ("W_K", &b.w_k, kv, c.d_model),
                ("W_V", &b.w_v, kv, c.d_model),
                ("W_O", &b.w_o, c.d_model, q),
                ("MLP gate", &b.w_gate, c.d_mlp, c.d_model),
                ("MLP up", &b.w_up, c.d_mlp, c.d_model),
                ("MLP down", &b.w_down, c.d_model, c.d_mlp),
            ]);
        }
        for (what, l, o, i) in expect {
            if (l.out_features, l.in_features) != (o, i) {
                return Err(Error::model_file(
                    path,
                    format!(
                        "has a {what} matrix of shape [{}, {}], but its config implies [{o}, {i}]",
                        l.out_features, l.in_features
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Number of parameters (the tied output counted once).
    pub fn n_params(&self, config: &Config) -> usize {
        let per_block: usize = self.blocks.first().map_or(0, |b| {
            [
                &b.w_q, &b.w_k, &b.w_v, &b.w_o, &b.w_gate, &b.w_up, &b.w_down,
            ]
            .iter()
            .map(|l| l.n_params())
            .sum::<usize>()
                + 2 * config.d_model
        });
        let head = if config.tied_embeddings {
            0
        } else {
            self.lm_head.n_params()
        };
        self.embed.n_params() + per_block * self.blocks.len() + config.d_model + head
    }
}

/// Whether a format is quantized (for display).
pub fn is_quantized(format: &str) -> bool {
    !matches!(format, "F32" | "F16" | "BF16")
}
