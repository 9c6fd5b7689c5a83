//! Self-supervised training of a tiny transformer, as the lecture describes it: the text is its
//! own label (each position learns to predict the token that follows it), the loss is the mean
//! of −log p(next token), and gradient descent (AdamW) lowers it a batch of random windows at a
//! time.
//!
//! The model is a Llama in miniature (pre-norm RMSNorm, rotary positions, SwiGLU MLP, tied
//! embeddings), its parameters candle `Var`s in a `VarMap` named as in GGUF after the
//! architecture's table ([`schema`](crate::model::schema)). So a trained model becomes a
//! [`Model`] ([`TinyGpt::to_model`]) that every tool of the course reads (module tree, traces,
//! `generate`, the explorer) and that [`Model::save_gguf`] writes. The forward pass here is the
//! glass box's, written with the differentiable tensor operations autograd needs (tests check the
//! two give the same logits).
//!
//! Shapes use: `B` windows per batch, `T` tokens per window, `D = d_model`, `H` heads of width
//! `d`, `V` tokens in the vocabulary.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var, D};
use candle_nn::optim::{AdamW, Optimizer, ParamsAdamW};
use candle_nn::VarMap;

use crate::error::{Error, Result};
use crate::model::schema::{self, Kind, Slot};
use crate::model::{Activation, Architecture, Config, Model, Weights};
use crate::rng::Rng;
use crate::tokenizer::Tokenizer;

/// The size of a tiny model. The default is nanoGPT's CPU recipe (4 layers, 4 heads, width 128,
/// context 64).
#[derive(Debug, Clone, PartialEq)]
pub struct TinyGptSpec {
    pub n_layers: usize,
    pub n_heads: usize,
    pub d_model: usize,
    /// Width of the MLP's hidden layer.
    pub d_mlp: usize,
    /// Longest window the model reads (the lecture's L).
    pub n_ctx: usize,
    /// Seed of the initial weights.
    pub seed: u64,
    /// Where each block normalises (the lecture's post-norm, Llama's pre-norm, or nowhere).
    pub norm: NormPlacement,
    /// Whether each sub-layer's output is added to its input (the residual connection) or
    /// replaces it.
    pub residual: bool,
}

/// Where a block's RMSNorm sits, for the lecture's claim that residual connections and
/// normalisation "facilitam a convergência".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NormPlacement {
    /// `x + f(norm(x))`: Llama's and Gemma's blocks (and the glass box's).
    Pre,
    /// `norm(x + f(x))`: the lecture's block (the original Transformer's).
    Post,
    /// No normalisation in the blocks.
    None,
}

impl Default for TinyGptSpec {
    fn default() -> Self {
        TinyGptSpec {
            n_layers: 4,
            n_heads: 4,
            d_model: 128,
            d_mlp: 512,
            n_ctx: 64,
            seed: 1,
            norm: NormPlacement::Pre,
            residual: true,
        }
    }
}

impl TinyGptSpec {
    /// The glass box's config of a model of this size with `tokenizer`'s vocabulary.
    pub fn config(&self, tokenizer: &Tokenizer) -> Result<Config> {
        let d_head = self.d_model / self.n_heads.max(1);
        let eos = tokenizer.token_id(crate::tokenizer::END_OF_TEXT);
        let config = Config {
            name: "mini-transformer".into(),
            architecture: Architecture::Llama,
            n_layers: self.n_layers,
            n_heads: self.n_heads,
            n_kv_heads: self.n_heads,
            d_head,
            d_model: self.d_model,
            d_mlp: self.d_mlp,
            d_vocab: tokenizer.vocab_size(),
            n_ctx: self.n_ctx,
            rope_theta: 10_000.0,
            rope_theta_local: 10_000.0,
            sliding_window: None,
            sliding_window_pattern: 0,
            embedding_scale: 1.0,
            mlp_activation: Activation::Silu,
            rope_scaling: None,
            rms_norm_eps: 1e-5,
            bos_token_id: None,
            eos_token_ids: eos.into_iter().collect(),
            add_bos_token: false,
            tied_embeddings: true,
            chat_template: None,
        };
        config.validate(std::path::Path::new("(the tiny model's spec)"))?;
        if d_head * self.n_heads != self.d_model {
            return Err(Error::invalid(format!(
                "d_model {} is not a multiple of {} heads",
                self.d_model, self.n_heads
            )));
        }
        Ok(config)
    }
}

/// A tiny transformer whose parameters train.
pub struct TinyGpt {
    /// Its shape, as the glass box reads it.
    pub config: Config,
    /// Its size and block layout.
    pub spec: TinyGptSpec,
    /// Its parameters, named as in GGUF (`blk.0.attn_q.weight`, …).
    pub varmap: VarMap,
}

/// The parameters of one forward pass, looked up once.
struct Params(HashMap<String, Tensor>);

impl Params {
    fn get(&self, slot: Slot, layer: Option<usize>, config: &Config) -> Result<&Tensor> {
        let spec = schema::find(config.architecture, slot)
            .ok_or_else(|| Error::invalid(format!("the table has no {slot:?}")))?;
        let name = spec.gguf_name(layer);
        self.0
            .get(&name)
            .ok_or_else(|| Error::invalid(format!("the tiny model has no `{name}`")))
    }
}

impl TinyGpt {
    /// A model of `spec`'s size for `tokenizer`'s vocabulary, initialised as GPT-2 is: matrices
    /// from N(0, 0.02²), the two that write into the residual stream (W_O, the MLP's down
    /// projection) scaled by 1/√(2·layers) so the stream does not grow with depth; gains 1.
    ///
    /// ```
    /// use llm_lab::train::{TinyGpt, TinyGptSpec};
    /// use llm_lab::tokenizer::Tokenizer;
    /// let tok = Tokenizer::train_bpe(&["o gato subiu no telhado"], 280)?;
    /// let spec = TinyGptSpec { n_layers: 1, d_model: 32, d_mlp: 64, n_ctx: 16, ..Default::default() };
    /// let gpt = TinyGpt::new(&spec, &tok)?;
    /// let v = tok.vocab_size(); // up to 280: a short text runs out of pairs to merge
    /// assert_eq!(gpt.n_params(), v * 32 + (32 + 4 * 32 * 32 + 32 + 3 * 32 * 64) + 32);
    /// # Ok::<(), llm_lab::Error>(())
    /// ```
    pub fn new(spec: &TinyGptSpec, tokenizer: &Tokenizer) -> Result<Self> {
        let config = spec.config(tokenizer)?;
        let mut rng = Rng::new(spec.seed);
        let varmap = VarMap::new();
        let residual = 1.0 / (2.0 * config.n_layers as f64).sqrt();
        {
            let mut data = varmap
                .data()
                .lock()
                .map_err(|_| Error::invalid("the parameters' lock is poisoned"))?;
            for (t, l) in schema::instances(&config) {
                let shape = t.shape(&config);
                let n: usize = shape.iter().product();
                let values: Vec<f32> = match t.kind {
                    Kind::Gain => vec![1.0; n],
                    Kind::Matrix => {
                        let std = match t.slot {
                            Slot::Wo | Slot::Down => 0.02 * residual,
                            _ => 0.02,
                        };
                        (0..n).map(|_| (normal(&mut rng) * std) as f32).collect()
                    }
                };
                let x = Tensor::from_vec(values, shape, &Device::Cpu)?;
                data.insert(t.gguf_name(l), Var::from_tensor(&x)?);
            }
        }
        Ok(TinyGpt {
            config,
            spec: spec.clone(),
            varmap,
        })
    }

    /// Number of parameters.
    pub fn n_params(&self) -> usize {
        self.varmap.all_vars().iter().map(|v| v.elem_count()).sum()
    }

    fn params(&self) -> Result<Params> {
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| Error::invalid("the parameters' lock is poisoned"))?;
        Ok(Params(
            data.iter()
                .map(|(k, v)| (k.clone(), v.as_tensor().clone()))
                .collect(),
        ))
    }

    /// Logits `[B, T, V]` for windows of token ids `[B, T]`: row `t` of a window predicts its
    /// token `t + 1`.
    pub fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let c = &self.config;
        let p = self.params()?;
        let (b, t) = ids.dims2()?;
        if t > c.n_ctx {
            return Err(Error::PromptTooLong {
                tokens: t,
                context: c.n_ctx,
            });
        }
        let (h, d) = (c.n_heads, c.d_head);
        let eps = c.rms_norm_eps;
        let embed = p.get(Slot::Embed, None, c)?; // [V, D]
        let mut x = embed
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((b, t, c.d_model))?; // [B, T, D]
        let (cos, sin) = rope_tables(&c.rope_inv_freqs(), t)?; // [1, 1, T, d/2, 1] each
        let mask = causal_mask(t)?; // [T, T]: 0 or −∞
        for l in 0..c.n_layers {
            let w = |s: Slot| p.get(s, Some(l), c);
            let attention = |x: &Tensor| -> Result<Tensor> {
                let heads = |m: &Tensor| -> Result<Tensor> {
                    Ok(linear(x, m)?
                        .reshape((b, t, h, d))?
                        .transpose(1, 2)?
                        .contiguous()?) // [B, H, T, d]
                };
                let q = rotate(&heads(w(Slot::Wq)?)?, &cos, &sin)?; // [B, H, T, d]
                let k = rotate(&heads(w(Slot::Wk)?)?, &cos, &sin)?; // [B, H, T, d]
                let v = heads(w(Slot::Wv)?)?; // [B, H, T, d]
                let scores = (q.matmul(&k.t()?.contiguous()?)? / (d as f64).sqrt())?; // [B, H, T, T]
                let pattern = softmax(&scores.broadcast_add(&mask)?)?; // rows sum to 1
                let z = pattern.matmul(&v)?; // [B, H, T, d]
                let z = z.transpose(1, 2)?.reshape((b, t, h * d))?; // [B, T, H·d]
                linear(&z, w(Slot::Wo)?) // [B, T, D]
            };
            // W_down(SiLU(W_gate x) ⊙ W_up x)
            let mlp = |x: &Tensor| -> Result<Tensor> {
                let gate = linear(x, w(Slot::Gate)?)?.silu()?; // [B, T, d_mlp]
                let up = linear(x, w(Slot::Up)?)?;
                linear(&(gate * up)?, w(Slot::Down)?) // [B, T, D]
            };
            x = self.sublayer(&x, w(Slot::AttnNorm)?, attention)?;
            x = self.sublayer(&x, w(Slot::MlpNorm)?, mlp)?;
        }
        let x = rms_norm(&x, p.get(Slot::FinalNorm, None, c)?, eps)?;
        linear(&x, embed) // [B, T, V], the output reuses the embeddings
    }

    /// One sub-layer `f` with its norm and residual connection, as the spec places them:
    /// pre-norm `x + f(norm(x))` (Llama), post-norm `norm(x + f(x))` (the lecture), and
    /// without the residual connection `f(norm(x))` or `norm(f(x))`.
    fn sublayer(
        &self,
        x: &Tensor,
        gain: &Tensor,
        f: impl Fn(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let eps = self.config.rms_norm_eps;
        let add =
            |y: Tensor| -> Result<Tensor> { Ok(if self.spec.residual { (x + y)? } else { y }) };
        match self.spec.norm {
            NormPlacement::Pre => add(f(&rms_norm(x, gain, eps)?)?),
            NormPlacement::Post => rms_norm(&add(f(x)?)?, gain, eps),
            NormPlacement::None => add(f(x)?),
        }
    }

    /// The mean next-token loss of windows `xs` whose next tokens are `ys` (both `[B, T]`).
    pub fn loss(&self, xs: &Tensor, ys: &Tensor) -> Result<Tensor> {
        let logits = self.forward(xs)?; // [B, T, V]
        let v = self.config.d_vocab;
        Ok(candle_nn::loss::cross_entropy(
            &logits.reshape(((), v))?,
            &ys.flatten_all()?,
        )?)
    }

    /// The trained model as the glass box reads it, with `tokenizer` (the one it was trained
    /// with): a copy, so training on does not change it. Only the pre-norm block with residual
    /// connections (the default) is the glass box's Llama.
    pub fn to_model(&self, tokenizer: &Tokenizer) -> Result<Model> {
        if self.spec.norm != NormPlacement::Pre || !self.spec.residual {
            return Err(Error::invalid(
                "only the pre-norm block with residual connections is a Llama that the glass box runs; this variant trains, but cannot become a Model",
            ));
        }
        let tensors = self
            .params()?
            .0
            .into_iter()
            .map(|(k, v)| Ok((k, v.copy()?)))
            .collect::<Result<HashMap<_, _>>>()?;
        Ok(Model {
            config: self.config.clone(),
            tokenizer: tokenizer.clone(),
            weights: Weights::from_tensors(&self.config, tensors)?,
            source: "(trained in this notebook)".into(),
        })
    }
}

/// Keeps the memory a training step frees for the next step. A step allocates and frees the
/// same large tensors (scores, logits, their gradients) every time; glibc hands allocations
/// above 128 KB to the kernel and takes them back, and every fresh page then faults and is
/// zeroed: a fifth of a step's time in `cargo xtask bench-train`. Raising the thresholds keeps
/// them in the heap (the process keeps its peak; a notebook that trains holds it anyway).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn mallopt(param: i32, value: i32) -> i32;
        }
        const M_TRIM_THRESHOLD: i32 = -1;
        const M_TOP_PAD: i32 = -2;
        const M_MMAP_THRESHOLD: i32 = -3;
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            for (param, value) in [
                (M_MMAP_THRESHOLD, 32 << 20),
                (M_TRIM_THRESHOLD, 1 << 30),
                (M_TOP_PAD, 64 << 20),
            ] {
                // SAFETY: mallopt only sets glibc's allocator parameters; these are within its
                // documented ranges (32 MiB is M_MMAP_THRESHOLD's maximum on 64-bit), and it
                // returns 0 without effect otherwise.
                unsafe {
                    mallopt(param, value);
                }
            }
        });
    }
}

/// A standard normal number (Box–Muller), from the course's seeded generator.
fn normal(rng: &mut Rng) -> f64 {
    let u = rng.next_f64().max(f64::MIN_POSITIVE);
    let v = rng.next_f64();
    (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
}

/// `x · Wᵀ`: `[B, T, in] → [B, T, out]`, as one `[B·T, in] × [in, out]` product (a broadcast
/// product would copy W per window, and its gradient sum them back).
fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    let (b, t, i) = x.dims3()?;
    let out = w.dim(0)?;
    Ok(x.reshape((b * t, i))?
        .matmul(&w.t()?)?
        .reshape((b, t, out))?)
}

/// RMSNorm over the last dimension, `x / √(mean(x²) + ε) · g`.
fn rms_norm(x: &Tensor, gain: &Tensor, eps: f64) -> Result<Tensor> {
    let rms = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?;
    Ok(x.broadcast_div(&rms)?.broadcast_mul(gain)?)
}

/// Softmax over the last dimension, the maximum subtracted first.
fn softmax(x: &Tensor) -> Result<Tensor> {
    let e = x.broadcast_sub(&x.max_keepdim(D::Minus1)?)?.exp()?;
    Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?)
}

/// `[T, T]`: 0 where a query may see a key (itself and before), −∞ after.
fn causal_mask(t: usize) -> Result<Tensor> {
    let m: Vec<f32> = (0..t * t)
        .map(|i| {
            if i % t > i / t {
                f32::NEG_INFINITY
            } else {
                0.0
            }
        })
        .collect();
    Ok(Tensor::from_vec(m, (t, t), &Device::Cpu)?)
}

/// `cos(p·θ_i)` and `sin(p·θ_i)` for positions `0..t`, shaped `[1, 1, t, d/2, 1]` to broadcast
/// over the pairs of `[B, H, t, d/2, 2]`.
fn rope_tables(inv_freq: &[f32], t: usize) -> Result<(Tensor, Tensor)> {
    let half = inv_freq.len();
    let angles: Vec<f32> = (0..t)
        .flat_map(|p| inv_freq.iter().map(move |f| p as f32 * f))
        .collect();
    let a = Tensor::from_vec(angles, (1, 1, t, half, 1), &Device::Cpu)?;
    Ok((a.cos()?, a.sin()?))
}

/// RoPE on pairs `(2i, 2i+1)`, the pairing of Llama's GGUF files: each pair turned by its
/// position's angle. `[B, H, T, d] → [B, H, T, d]`.
fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let (b, h, t, d) = x.dims4()?;
    let pairs = x.reshape((b, h, t, d / 2, 2))?;
    let (x0, x1) = (pairs.narrow(4, 0, 1)?, pairs.narrow(4, 1, 1)?);
    let r0 = (x0.broadcast_mul(cos)? - x1.broadcast_mul(sin)?)?;
    let r1 = (x0.broadcast_mul(sin)? + x1.broadcast_mul(cos)?)?;
    Ok(Tensor::cat(&[r0, r1], 4)?.reshape((b, h, t, d))?)
}

/// Random windows of a token sequence, each with its next tokens: the self-supervised batch.
pub struct Batches {
    tokens: Vec<u32>,
    batch: usize,
    window: usize,
    rng: Rng,
}

impl Batches {
    /// Batches of `batch` windows of `window` tokens from `tokens`, drawn with `seed`.
    pub fn new(tokens: Vec<u32>, batch: usize, window: usize, seed: u64) -> Result<Self> {
        if batch == 0 || window == 0 {
            return Err(Error::invalid(
                "a batch needs at least one window of one token",
            ));
        }
        if tokens.len() <= window {
            return Err(Error::invalid(format!(
                "{} tokens cannot give a window of {window} and its next tokens: use a longer text or a shorter window",
                tokens.len()
            )));
        }
        Ok(Batches {
            tokens,
            batch,
            window,
            rng: Rng::new(seed),
        })
    }

    /// `(xs, ys)`, both `[batch, window]`: `ys` is `xs` one token further on.
    pub fn next_batch(&mut self) -> Result<(Tensor, Tensor)> {
        let starts = self.next_starts();
        self.batch_at(&starts)
    }

    /// Where the next batch's windows start (what [`Batches::next_batch`] would draw), so that
    /// another trainer can be given the very same batches.
    pub fn next_starts(&mut self) -> Vec<usize> {
        let starts = self.tokens.len() - self.window; // a window and its next token fit
        (0..self.batch)
            .map(|_| (self.rng.next_u64() % starts as u64) as usize)
            .collect()
    }

    /// The windows starting at `starts`, and their next tokens.
    pub fn batch_at(&self, starts: &[usize]) -> Result<(Tensor, Tensor)> {
        let mut xs = Vec::with_capacity(starts.len() * self.window);
        let mut ys = Vec::with_capacity(starts.len() * self.window);
        for &s in starts {
            let (Some(x), Some(y)) = (
                self.tokens.get(s..s + self.window),
                self.tokens.get(s + 1..s + 1 + self.window),
            ) else {
                return Err(Error::invalid(format!(
                    "a window at {s} runs past the {} tokens",
                    self.tokens.len()
                )));
            };
            xs.extend_from_slice(x);
            ys.extend_from_slice(y);
        }
        let shape = (starts.len(), self.window);
        Ok((
            Tensor::from_vec(xs, shape, &Device::Cpu)?,
            Tensor::from_vec(ys, shape, &Device::Cpu)?,
        ))
    }
}

/// A model, its optimiser and the losses so far.
pub struct Trainer {
    /// The model being trained.
    pub model: TinyGpt,
    optimizer: AdamW,
    /// `(step, training loss)` of every step taken.
    pub history: Vec<(usize, f32)>,
}

impl Trainer {
    /// AdamW at learning rate `lr` (nanoGPT's recipe: 1e-3, β₂ 0.99, weight decay 0.1).
    pub fn new(model: TinyGpt, lr: f64) -> Result<Self> {
        keep_freed_memory();
        let params = ParamsAdamW {
            lr,
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let optimizer = AdamW::new(model.varmap.all_vars(), params)?;
        Ok(Trainer {
            model,
            optimizer,
            history: Vec::new(),
        })
    }

    /// One step of gradient descent on a batch; returns its loss before the step.
    pub fn step(&mut self, xs: &Tensor, ys: &Tensor) -> Result<f32> {
        let loss = self.model.loss(xs, ys)?;
        self.optimizer.backward_step(&loss)?;
        let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        self.history.push((self.history.len() + 1, value));
        Ok(value)
    }

    /// The mean loss over `n` batches, without training on them.
    pub fn evaluate(&self, batches: &mut Batches, n: usize) -> Result<f32> {
        let mut total = 0.0;
        for _ in 0..n.max(1) {
            let (xs, ys) = batches.next_batch()?;
            total += self.model.loss(&xs, &ys)?.to_scalar::<f32>()?;
        }
        Ok(total / n.max(1) as f32)
    }
}
