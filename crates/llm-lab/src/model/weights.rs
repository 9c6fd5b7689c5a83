//! The model's parameters, loaded from a GGUF file or a Hugging Face folder into the same structs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Tensor};

use super::config::{Architecture, Config};
use super::q4_1::Q4_1Matrix;
use super::q5_0::Q5_0Matrix;
use super::q8_0::{Q8Partner, Q8_0Matrix};
use super::schema::{self, Kind, Slot, TensorSpec};
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
    /// let b = &model.weights.blocks[0].attn;
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

/// A block's attention sub-layer: its norm, the four projections and Gemma's extra norms.
#[derive(Debug, Clone)]
pub struct AttentionWeights {
    /// RMSNorm gain before attention, `[d_model]`.
    pub norm: Tensor,
    /// Query projection W_Q, `[n_heads·d_head, d_model]`.
    pub w_q: Linear,
    /// Key projection W_K, `[n_kv_heads·d_head, d_model]`.
    pub w_k: Linear,
    /// Value projection W_V, `[n_kv_heads·d_head, d_model]`.
    pub w_v: Linear,
    /// Output projection W_O, `[d_model, n_heads·d_head]`.
    pub w_o: Linear,
    /// Gemma: RMSNorm gains of each query and key head before RoPE, `[d_head]` each.
    pub qk_norm: Option<(Tensor, Tensor)>,
    /// Gemma: RMSNorm gain on attention's output before it joins the stream, `[d_model]`.
    pub post_norm: Option<Tensor>,
}

/// A block's MLP sub-layer: its norm, the gated MLP's three matrices and Gemma's output norm.
#[derive(Debug, Clone)]
pub struct MlpWeights {
    /// RMSNorm gain before the MLP, `[d_model]`.
    pub norm: Tensor,
    /// Gate projection, `[d_mlp, d_model]`.
    pub w_gate: Linear,
    /// Up projection, `[d_mlp, d_model]`.
    pub w_up: Linear,
    /// Down projection, `[d_model, d_mlp]`.
    pub w_down: Linear,
    /// Gemma: RMSNorm gain on the MLP's output before it joins the stream, `[d_model]`.
    pub post_norm: Option<Tensor>,
}

/// One transformer block's parameters.
#[derive(Debug, Clone)]
pub struct BlockWeights {
    /// The attention sub-layer.
    pub attn: AttentionWeights,
    /// The MLP sub-layer.
    pub mlp: MlpWeights,
}

/// A loaded tensor, seen through the table's [`Slot`]: a matrix or a norm's gain.
#[derive(Debug, Clone, Copy)]
pub enum Param<'a> {
    /// A (possibly quantized) matrix.
    Matrix(&'a Linear),
    /// A norm's gain.
    Gain(&'a Tensor),
}

impl Param<'_> {
    /// Its shape, rows first.
    pub fn shape(&self) -> Vec<usize> {
        match self {
            Param::Matrix(l) => vec![l.out_features, l.in_features],
            Param::Gain(t) => t.dims().to_vec(),
        }
    }

    /// Its number of parameters.
    pub fn n_params(&self) -> usize {
        self.shape().iter().product()
    }
}

/// A tensor as a loader reads it, before it is put in its slot.
enum Loaded {
    Matrix(Linear),
    Gain(Tensor),
}

impl BlockWeights {
    /// The tensor in `slot`, if this block has it.
    pub fn param(&self, slot: Slot) -> Option<Param<'_>> {
        let (a, m) = (&self.attn, &self.mlp);
        Some(match slot {
            Slot::AttnNorm => Param::Gain(&a.norm),
            Slot::Wq => Param::Matrix(&a.w_q),
            Slot::Wk => Param::Matrix(&a.w_k),
            Slot::Wv => Param::Matrix(&a.w_v),
            Slot::Wo => Param::Matrix(&a.w_o),
            Slot::QNorm => Param::Gain(&a.qk_norm.as_ref()?.0),
            Slot::KNorm => Param::Gain(&a.qk_norm.as_ref()?.1),
            Slot::AttnPostNorm => Param::Gain(a.post_norm.as_ref()?),
            Slot::MlpNorm => Param::Gain(&m.norm),
            Slot::Gate => Param::Matrix(&m.w_gate),
            Slot::Up => Param::Matrix(&m.w_up),
            Slot::Down => Param::Matrix(&m.w_down),
            Slot::MlpPostNorm => Param::Gain(m.post_norm.as_ref()?),
            Slot::Embed | Slot::FinalNorm | Slot::LmHead => return None,
        })
    }

    /// The block from the tensors a loader read for it, by slot.
    fn assemble(mut parts: HashMap<Slot, Loaded>) -> Result<Self> {
        let mut matrix = |s: Slot| match parts.remove(&s) {
            Some(Loaded::Matrix(l)) => Ok(l),
            _ => Err(Error::invalid(format!(
                "the loader read no matrix for {s:?}"
            ))),
        };
        let (w_q, w_k, w_v, w_o) = (
            matrix(Slot::Wq)?,
            matrix(Slot::Wk)?,
            matrix(Slot::Wv)?,
            matrix(Slot::Wo)?,
        );
        let (w_gate, w_up, w_down) = (matrix(Slot::Gate)?, matrix(Slot::Up)?, matrix(Slot::Down)?);
        let mut gain = |s: Slot| match parts.remove(&s) {
            Some(Loaded::Gain(t)) => Some(t),
            _ => None,
        };
        let missing = |s: Slot| Error::invalid(format!("the loader read no gain for {s:?}"));
        let attn = AttentionWeights {
            norm: gain(Slot::AttnNorm).ok_or_else(|| missing(Slot::AttnNorm))?,
            w_q,
            w_k,
            w_v,
            w_o,
            qk_norm: gain(Slot::QNorm).zip(gain(Slot::KNorm)),
            post_norm: gain(Slot::AttnPostNorm),
        };
        let mlp = MlpWeights {
            norm: gain(Slot::MlpNorm).ok_or_else(|| missing(Slot::MlpNorm))?,
            w_gate,
            w_up,
            w_down,
            post_norm: gain(Slot::MlpPostNorm),
        };
        Ok(BlockWeights { attn, mlp })
    }

    /// The block's matrices, to convert their storage.
    fn matrices_mut(&mut self) -> [&mut Linear; 7] {
        let (a, m) = (&mut self.attn, &mut self.mlp);
        [
            &mut a.w_q,
            &mut a.w_k,
            &mut a.w_v,
            &mut a.w_o,
            &mut m.w_gate,
            &mut m.w_up,
            &mut m.w_down,
        ]
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
    /// The tensor of `spec` in block `layer` (`None` for one outside the blocks), if held.
    pub fn param(&self, slot: Slot, layer: Option<usize>) -> Option<Param<'_>> {
        match (slot, layer) {
            (Slot::Embed, None) => Some(Param::Matrix(&self.embed)),
            (Slot::FinalNorm, None) => Some(Param::Gain(&self.final_norm)),
            (Slot::LmHead, None) => Some(Param::Matrix(&self.lm_head)),
            (slot, Some(l)) => self.blocks.get(l)?.param(slot),
            _ => None,
        }
    }

    /// Loads every tensor of the config's table through `read`, which returns `None` for a
    /// tensor the file does not hold (an error unless the table marks it optional).
    fn from_table(
        config: &Config,
        path: &Path,
        naming: Naming,
        rope_style: RopeStyle,
        mut read: impl FnMut(&TensorSpec, &str) -> Result<Option<Loaded>>,
    ) -> Result<Self> {
        let table = schema::tensors(config.architecture);
        let mut top = HashMap::new();
        let mut blocks = Vec::with_capacity(config.n_layers);
        let mut read = |t: &TensorSpec, l: Option<usize>| -> Result<Option<Loaded>> {
            let name = naming.name(t, l);
            match read(t, &name)? {
                None if !t.optional => Err(Error::model_file(
                    path,
                    format!(
                        "lacks the tensor `{name}`; is it a complete {} model?",
                        config.architecture
                    ),
                )),
                found => Ok(found),
            }
        };
        for t in table.iter().filter(|t| !t.per_layer()) {
            if let Some(x) = read(t, None)? {
                top.insert(t.slot, x);
            }
        }
        for l in 0..config.n_layers {
            let mut parts = HashMap::new();
            for t in table.iter().filter(|t| t.per_layer()) {
                parts.extend(read(t, Some(l))?.map(|x| (t.slot, x)));
            }
            blocks.push(BlockWeights::assemble(parts)?);
        }
        let embed = match top.remove(&Slot::Embed) {
            Some(Loaded::Matrix(l)) => l,
            _ => return Err(Error::invalid("the table has no token embeddings")),
        };
        let final_norm = match top.remove(&Slot::FinalNorm) {
            Some(Loaded::Gain(t)) => t,
            _ => return Err(Error::invalid("the table has no final norm")),
        };
        let lm_head = match top.remove(&Slot::LmHead) {
            Some(Loaded::Matrix(l)) => l,
            _ => embed.clone(), // tied: the output projection reuses the embeddings
        };
        Ok(Weights {
            embed,
            blocks,
            final_norm,
            lm_head,
            rope_style,
        })
    }

    pub(crate) fn from_gguf(g: &mut Gguf, config: &Config, device: &Device) -> Result<Self> {
        let path = g.path.clone();
        check_shapes_by_name(&path, config, Naming::Gguf, |name| {
            g.content
                .tensor_infos
                .get(name)
                .map(|i| i.shape.dims().to_vec())
        })?;
        // llama.cpp's converter permutes Llama's Q/K rows for the interleaved rotation; it
        // leaves Gemma's as trained, for the half-split one (ggml's NEOX mode).
        let rope_style = match config.architecture {
            Architecture::Gemma3 => RopeStyle::HalfSplit,
            Architecture::Llama => RopeStyle::Interleaved,
        };
        Self::from_table(config, &path, Naming::Gguf, rope_style, |t, name| {
            let Some(info) = g.content.tensor_infos.get(name) else {
                return Ok(None);
            };
            let dims = info.shape.dims().to_vec();
            Ok(Some(match (t.kind, info.ggml_dtype) {
                // Read straight into the kernel's layout: the embedding is the largest tensor.
                (Kind::Matrix, GgmlDType::Q8_0) => {
                    let m = Q8_0Matrix::from_gguf(g, name, dims[0], dims[1])?;
                    Loaded::Matrix(Linear {
                        weight: Matrix::Q8_0(Arc::new(m)),
                        out_features: dims[0],
                        in_features: dims[1],
                        format: "Q8_0".into(),
                    })
                }
                (Kind::Matrix, _) => Loaded::Matrix(Linear::from_qtensor(g.tensor(name, device)?)?),
                (Kind::Gain, _) => Loaded::Gain(g.tensor(name, device)?.dequantize(device)?),
            }))
        })
    }

    /// Weights from f32 tensors named as in GGUF (`blk.0.attn_q.weight`, …), shapes checked
    /// against `config`: what a model trained in a notebook becomes. Q and K rows are in GGUF's
    /// interleaved pairing.
    pub(crate) fn from_tensors(config: &Config, tensors: HashMap<String, Tensor>) -> Result<Self> {
        let here = Path::new("(tensors in memory)");
        Self::from_map(config, here, Naming::Gguf, RopeStyle::Interleaved, tensors)
    }

    pub(crate) fn from_safetensors(
        files: &[std::path::PathBuf],
        config: &Config,
        device: &Device,
    ) -> Result<Self> {
        let mut all = HashMap::new();
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
        Self::from_map(config, dir, Naming::HuggingFace, RopeStyle::HalfSplit, all)
    }

    /// Weights from unquantized tensors by name (`path` names where they came from in errors):
    /// shapes checked by name, then each taken into its slot.
    fn from_map(
        config: &Config,
        path: &Path,
        naming: Naming,
        rope_style: RopeStyle,
        mut tensors: HashMap<String, Tensor>,
    ) -> Result<Self> {
        check_shapes_by_name(path, config, naming, |name| {
            tensors.get(name).map(|t| t.dims().to_vec())
        })?;
        Self::from_table(config, path, naming, rope_style, |t, name| {
            let Some(x) = tensors.remove(name) else {
                return Ok(None);
            };
            Ok(Some(match t.kind {
                Kind::Matrix => Loaded::Matrix(Linear::from_tensor(x)?),
                Kind::Gain => Loaded::Gain(x.to_dtype(DType::F32)?),
            }))
        })
    }

    /// Converts every matrix to `format`.
    pub(crate) fn convert(&mut self, format: WeightFormat) -> Result<()> {
        for b in &mut self.blocks {
            for l in b.matrices_mut() {
                l.convert(format)?;
            }
        }
        self.embed.convert(format)?;
        self.lm_head.convert(format)
    }

    /// Number of parameters (the tied output counted once).
    pub fn n_params(&self, config: &Config) -> usize {
        schema::instances(config)
            .iter()
            .filter_map(|(t, l)| self.param(t.slot, *l))
            .map(|p| p.n_params())
            .sum()
    }
}

/// How a file names the model's tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Naming {
    Gguf,
    HuggingFace,
}

impl Naming {
    /// The name of `t`'s copy in block `layer` (`None` outside the blocks).
    fn name(self, t: &TensorSpec, layer: Option<usize>) -> String {
        match self {
            Naming::Gguf => t.gguf_name(layer),
            Naming::HuggingFace => t.hf_name(layer),
        }
    }
}

/// Compares every tensor's shape (`found`, before any product runs) with the one the config
/// implies, so a corrupt file is refused by name instead of failing inside a product. A missing
/// tensor is left to the loader, which names it.
fn check_shapes_by_name(
    path: &Path,
    c: &Config,
    naming: Naming,
    found: impl Fn(&str) -> Option<Vec<usize>>,
) -> Result<()> {
    for t in schema::tensors(c.architecture) {
        for l in t.layers(c.n_layers) {
            let name = naming.name(t, l);
            let Some(found) = found(&name) else { continue };
            let want = t.shape(c);
            if found != want {
                return Err(Error::model_file(
                    path,
                    format!(
                        "has the tensor `{name}` of shape {found:?}, but its configuration ({} layers, d_model {}, {} heads and {} KV heads of width {}, MLP {}, vocabulary {}) needs {want:?}; the file is corrupt or not a {} model",
                        c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_head, c.d_mlp, c.d_vocab, c.architecture
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// Whether a format is quantized (for display).
pub fn is_quantized(format: &str) -> bool {
    !matches!(format, "F32" | "F16" | "BF16")
}
