//! The model's parameters, loaded from a GGUF file or a Hugging Face folder into the same structs.

use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};

use super::config::{Architecture, Config};
use super::q4_1::Q4_1Matrix;
use super::q5_0::Q5_0Matrix;
use super::q8_0::{Q8Partner, Q8_0Matrix};
use super::simd::Kernel;
use crate::error::{Error, Result};
use crate::gguf::Gguf;

/// One product of several matrices that read the same input: (input, rows, one output each).
type ManyProduct<'a> = dyn Fn(&[f32], usize, &mut [&mut [f32]]) + 'a;

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
    /// Q5_0 blocks as stored, multiplied by this crate's vectorised kernel (candle's is scalar).
    Q5_0(Arc<Q5_0Matrix>),
    /// Q8_0 blocks read straight from the file, multiplied by this crate's SIMD kernel.
    Q8_0(Arc<Q8_0Matrix>),
}

impl Matrix {
    /// Row `r` as f32, for the matrices this crate stores itself.
    fn dequantize_row(&self, r: usize, out: &mut [f32]) -> candle_core::Result<()> {
        match self {
            Matrix::Q4_1(m) => m.dequantize_row(r, out),
            Matrix::Q5_0(m) => m.dequantize_row(r, out),
            Matrix::Q8_0(m) => m.dequantize_row(r, out),
            Matrix::Candle(_) => candle_core::bail!("candle's matrices dequantize themselves"),
        }
        Ok(())
    }
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
        } else if q.dtype() == GgmlDType::Q5_0 {
            let m =
                Q5_0Matrix::from_bytes(&q.data()?, out_features, in_features).ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "Q5_0 matrix [{out_features}, {in_features}] has the wrong number of bytes"
                    ))
                })?;
            Matrix::Q5_0(Arc::new(m))
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
            Matrix::Q5_0(_) | Matrix::Q8_0(_) => {
                let [y] = Self::forward_many([self], x)?;
                Ok(y)
            }
        }
    }

    /// `[x · W₁ᵀ, x · W₂ᵀ, …]` for matrices that read the same input: the same numbers as
    /// calling [`forward`](Self::forward) on each, in one pass when all are Q4_1, or all Q5_0 or
    /// Q8_0.
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
        let same_input = linears
            .iter()
            .all(|l| l.in_features == linears[0].in_features);
        let q4_1: Option<Vec<&Q4_1Matrix>> = linears
            .iter()
            .map(|l| match &l.weight {
                Matrix::Q4_1(m) if same_input => Some(m.as_ref()),
                _ => None,
            })
            .collect();
        // Q5_0 and Q8_0 weights both multiply activations rounded to Q8_0: mixed is fine.
        let partners: Option<Vec<Q8Partner<'_>>> = linears
            .iter()
            .map(|l| match &l.weight {
                Matrix::Q5_0(m) if same_input => Some(Q8Partner::Q5_0(m.as_ref())),
                Matrix::Q8_0(m) if same_input => Some(Q8Partner::Q8_0(m.as_ref())),
                _ => None,
            })
            .collect();
        let run: Box<ManyProduct<'_>> = match (q4_1, partners) {
            (Some(ms), _) => Box::new(move |xs, rows, outs| {
                super::q4_1::matmul_many(Kernel::best(), &ms, xs, rows, outs)
            }),
            (_, Some(ms)) => Box::new(move |xs, rows, outs| {
                super::q8_0::matmul_partners(Kernel::best(), &ms, xs, rows, outs)
            }),
            _ => return all_ok(linears.map(|l| l.forward(x))),
        };
        let x = x.to_dtype(DType::F32)?.contiguous()?;
        let rows = x.elem_count() / linears[0].in_features;
        let mut ys: Vec<Vec<f32>> = linears
            .iter()
            .map(|l| vec![0f32; rows * l.out_features])
            .collect();
        let mut outs: Vec<&mut [f32]> = ys.iter_mut().map(|y| y.as_mut_slice()).collect();
        super::with_cpu_f32(&x, |data, layout| {
            run(
                &data[layout.start_offset()..][..x.elem_count()],
                rows,
                &mut outs,
            )
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
            m => {
                let ids = ids.to_vec1::<u32>()?;
                let mut out = vec![0f32; ids.len() * self.in_features];
                for (&id, row) in ids.iter().zip(out.chunks_exact_mut(self.in_features)) {
                    if id as usize >= self.out_features {
                        candle_core::bail!(
                            "token id {id} is out of range for {} embeddings",
                            self.out_features
                        )
                    }
                    m.dequantize_row(id as usize, row)?;
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
            m => {
                let mut out = vec![0f32; self.out_features * self.in_features];
                for (r, row) in out.chunks_exact_mut(self.in_features).enumerate() {
                    m.dequantize_row(r, row)?;
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
            Matrix::Candle(QMatMul::QTensor(_))
                | Matrix::Q4_1(_)
                | Matrix::Q5_0(_)
                | Matrix::Q8_0(_)
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
    /// Gemma: RMSNorm gain applied to each query head before RoPE, `[d_head]`.
    pub q_norm: Option<Tensor>,
    /// Gemma: RMSNorm gain applied to each key head before RoPE, `[d_head]`.
    pub k_norm: Option<Tensor>,
    /// Gemma: RMSNorm gain on attention's output before it joins the stream, `[d_model]`.
    pub attn_post_norm: Option<Tensor>,
    /// Gemma: RMSNorm gain on the MLP's output before it joins the stream, `[d_model]`.
    pub mlp_post_norm: Option<Tensor>,
}

impl BlockWeights {
    /// The block's RMSNorm gains, each `[d_model]` or `[d_head]`.
    fn norms(&self) -> impl Iterator<Item = &Tensor> {
        [&self.attn_norm, &self.mlp_norm]
            .into_iter()
            .chain(self.q_norm.iter())
            .chain(self.k_norm.iter())
            .chain(self.attn_post_norm.iter())
            .chain(self.mlp_post_norm.iter())
    }
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
        check_shapes_by_name(
            &g.path,
            config,
            Naming::Gguf,
            g.has("output.weight"),
            |name| {
                g.content
                    .tensor_infos
                    .get(name)
                    .map(|i| i.shape.dims().to_vec())
            },
        )?;
        let lin = |g: &mut Gguf, name: &str| -> Result<Linear> {
            let info = g.content.tensor_infos.get(name);
            match info.map(|i| (i.ggml_dtype, i.shape.dims().to_vec())) {
                // Read straight into the kernel's layout: the embedding is the largest tensor.
                Some((GgmlDType::Q8_0, dims)) if dims.len() == 2 => {
                    let m = Q8_0Matrix::from_gguf(g, name, dims[0], dims[1])?;
                    Ok(Linear {
                        weight: Matrix::Q8_0(Arc::new(m)),
                        out_features: dims[0],
                        in_features: dims[1],
                        format: "Q8_0".into(),
                    })
                }
                _ => Linear::from_qtensor(g.tensor(name, device)?),
            }
        };
        let vec = |g: &mut Gguf, name: &str| -> Result<Tensor> {
            Ok(g.tensor(name, device)?.dequantize(device)?)
        };
        let embed = lin(g, "token_embd.weight")?;
        let gemma = config.architecture == Architecture::Gemma3;
        let mut blocks = Vec::with_capacity(config.n_layers);
        for l in 0..config.n_layers {
            let n = |s: &str| format!("blk.{l}.{s}.weight");
            let gemma_norm = |g: &mut Gguf, s: &str| -> Result<Option<Tensor>> {
                if gemma {
                    Ok(Some(vec(g, &n(s))?))
                } else {
                    Ok(None)
                }
            };
            blocks.push(BlockWeights {
                q_norm: gemma_norm(g, "attn_q_norm")?,
                k_norm: gemma_norm(g, "attn_k_norm")?,
                attn_post_norm: gemma_norm(g, "post_attention_norm")?,
                mlp_post_norm: gemma_norm(g, "post_ffw_norm")?,
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
            // llama.cpp's converter permutes Llama's Q/K rows for the interleaved rotation; it
            // leaves Gemma's as trained, for the half-split one (ggml's NEOX mode).
            rope_style: if gemma {
                RopeStyle::HalfSplit
            } else {
                RopeStyle::Interleaved
            },
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
            crate::gguf::ensure_regular_file(f)?;
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
        check_shapes_by_name(
            dir,
            config,
            Naming::HuggingFace,
            all.contains_key("lm_head.weight"),
            |name| all.get(name).map(|t| t.dims().to_vec()),
        )?;
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
                q_norm: None,
                k_norm: None,
                attn_post_norm: None,
                mlp_post_norm: None,
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
        for (l, b) in self.blocks.iter().enumerate() {
            let gains = [
                ("attn_norm", Some(&b.attn_norm), c.d_model),
                ("ffn_norm", Some(&b.mlp_norm), c.d_model),
                ("attn_q_norm", b.q_norm.as_ref(), c.d_head),
                ("attn_k_norm", b.k_norm.as_ref(), c.d_head),
                ("post_attention_norm", b.attn_post_norm.as_ref(), c.d_model),
                ("post_ffw_norm", b.mlp_post_norm.as_ref(), c.d_model),
            ];
            for (what, t, n) in gains {
                if let Some(t) = t.filter(|t| t.dims() != [n]) {
                    return Err(Error::model_file(
                        path,
                        format!(
                            "has a blk.{l}.{what} gain of shape {:?}, but its config implies [{n}]",
                            t.dims()
                        ),
                    ));
                }
            }
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
                + b.norms().map(Tensor::elem_count).sum::<usize>()
        });
        let head = if config.tied_embeddings {
            0
        } else {
            self.lm_head.n_params()
        };
        self.embed.n_params() + per_block * self.blocks.len() + config.d_model + head
    }
}

/// How a file names the model's tensors.
#[derive(Debug, Clone, Copy)]
enum Naming {
    Gguf,
    HuggingFace,
}

/// Every tensor the model reads, with the shape (rows first) its config promises.
fn expected_shapes(c: &Config, naming: Naming, has_output: bool) -> Vec<(String, Vec<usize>)> {
    // `validate` has checked n_heads · d_head = d_model, so these products do not overflow.
    let (q, kv, d) = (c.n_heads * c.d_head, c.n_kv_heads * c.d_head, c.d_model);
    let top = |gguf: &str, hf: &str| match naming {
        Naming::Gguf => gguf.to_string(),
        Naming::HuggingFace => hf.to_string(),
    };
    let mut v = vec![
        (
            top("token_embd.weight", "model.embed_tokens.weight"),
            vec![c.d_vocab, d],
        ),
        (top("output_norm.weight", "model.norm.weight"), vec![d]),
    ];
    if has_output {
        v.push((top("output.weight", "lm_head.weight"), vec![c.d_vocab, d]));
    }
    for l in 0..c.n_layers {
        let n = |gguf: &str, hf: &str| match naming {
            Naming::Gguf => format!("blk.{l}.{gguf}.weight"),
            Naming::HuggingFace => format!("model.layers.{l}.{hf}.weight"),
        };
        v.extend([
            (n("attn_norm", "input_layernorm"), vec![d]),
            (n("attn_q", "self_attn.q_proj"), vec![q, d]),
            (n("attn_k", "self_attn.k_proj"), vec![kv, d]),
            (n("attn_v", "self_attn.v_proj"), vec![kv, d]),
            (n("attn_output", "self_attn.o_proj"), vec![d, q]),
            (n("ffn_norm", "post_attention_layernorm"), vec![d]),
            (n("ffn_gate", "mlp.gate_proj"), vec![c.d_mlp, d]),
            (n("ffn_up", "mlp.up_proj"), vec![c.d_mlp, d]),
            (n("ffn_down", "mlp.down_proj"), vec![d, c.d_mlp]),
        ]);
    }
    v
}

/// Compares every tensor's shape (`found`, before any product runs) with the config, so a
/// corrupt file is refused by name instead of failing inside a product. A missing tensor is left
/// to the loader, which names it.
fn check_shapes_by_name(
    path: &Path,
    c: &Config,
    naming: Naming,
    has_output: bool,
    found: impl Fn(&str) -> Option<Vec<usize>>,
) -> Result<()> {
    for (name, want) in expected_shapes(c, naming, has_output) {
        let Some(found) = found(&name) else { continue };
        if found != want {
            return Err(Error::model_file(
                path,
                format!(
                    "has the tensor `{name}` of shape {found:?}, but its configuration ({} layers, d_model {}, {} heads and {} KV heads of width {}, MLP {}, vocabulary {}) needs {want:?}; the file is corrupt or not a Llama model",
                    c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_head, c.d_mlp, c.d_vocab
                ),
            ));
        }
    }
    Ok(())
}

/// Whether a format is quantized (for display).
pub fn is_quantized(format: &str) -> bool {
    !matches!(format, "F32" | "F16" | "BF16")
}
