//! The numbers that define a model: which architecture, how many layers and heads, how wide,
//! how long.
//!
//! Field names follow TransformerLens (`n_layers`, `n_heads`, `d_model`, `d_head`, `d_mlp`, `d_vocab`,
//! `n_ctx`) so that a student who moves on to Python finds the same words.

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::Device;

use crate::error::{Error, Result};
use crate::gguf::{value_as_u64, Gguf};

/// Which forward pass a model runs. Both share the lecture's skeleton (embeddings, blocks of
/// attention + MLP on a residual stream, final norm, logits); Gemma 3 changes a few pieces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// Llama (SmolLM2, Llama 3.x): pre-norm blocks, SwiGLU MLP, one RoPE base for every layer.
    Llama,
    /// Gemma 3: embeddings scaled by √d_model, RMSNorm on each query and key head, norms before
    /// *and after* each sub-layer, GELU-gated MLP, and local layers that attend within a sliding
    /// window with their own RoPE base.
    Gemma3,
}

impl Architecture {
    /// The name GGUF's `general.architecture` uses.
    pub fn gguf_name(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Gemma3 => "gemma3",
        }
    }
}

impl std::fmt::Display for Architecture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.gguf_name())
    }
}

/// The non-linearity of the gated MLP: `W_down · (act(W_gate · x) ⊙ W_up · x)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// SiLU, `x · σ(x)` (Llama's SwiGLU).
    Silu,
    /// GELU with the tanh approximation, `x/2 · (1 + tanh(√(2/π) · (x + 0.044715 x³)))` (Gemma's
    /// GeGLU).
    GeluTanh,
}

/// How RoPE frequencies are stretched for long contexts (Llama 3.1 and later).
#[derive(Debug, Clone, PartialEq)]
pub enum RopeScaling {
    /// Hugging Face's `rope_scaling = {"rope_type": "llama3", ...}` in config.json.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: usize,
    },
    /// GGUF's `rope_freqs.weight`: one divisor per frequency, already computed by the converter.
    FrequencyFactors(Vec<f32>),
}

/// The shape of a model.
///
/// ```
/// let c = llm_lab::Config::llama_3_2_1b();
/// assert_eq!((c.n_layers, c.n_heads, c.n_kv_heads), (16, 32, 8));
/// assert_eq!(c.d_head, c.d_model / c.n_heads);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Human-readable model name.
    pub name: String,
    /// Which forward pass runs (the file's `general.architecture`).
    pub architecture: Architecture,
    /// Number of transformer blocks (camadas).
    pub n_layers: usize,
    /// Number of attention heads for queries (cabeças).
    pub n_heads: usize,
    /// Number of key/value heads; each is shared by `n_heads / n_kv_heads` query heads (grouped-query attention).
    pub n_kv_heads: usize,
    /// Width of one head's query, key and value vectors.
    pub d_head: usize,
    /// Width of the residual stream (the embedding dimension D of the lecture).
    pub d_model: usize,
    /// Width of the MLP's hidden layer.
    pub d_mlp: usize,
    /// Number of tokens in the vocabulary.
    pub d_vocab: usize,
    /// Context length the model was trained for (the window L).
    pub n_ctx: usize,
    /// RoPE base frequency θ (of the global layers, on Gemma 3).
    pub rope_theta: f32,
    /// RoPE base of the local (sliding-window) layers; equal to `rope_theta` when there are none.
    pub rope_theta_local: f32,
    /// How many positions a local layer's query sees: itself and the `window − 1` before it
    /// (Gemma 3: 512). `None`: every layer sees the whole context.
    pub sliding_window: Option<usize>,
    /// With a sliding window, every `sliding_window_pattern`-th layer is global and the others
    /// local (Gemma 3: 6, so layers 5, 11, 17 are global).
    pub sliding_window_pattern: usize,
    /// Factor applied to the token embeddings before the first block (Gemma: √d_model, Llama: 1).
    pub embedding_scale: f32,
    /// The gated MLP's activation.
    pub mlp_activation: Activation,
    /// Long-context RoPE scaling, if any.
    pub rope_scaling: Option<RopeScaling>,
    /// ε inside RMSNorm.
    pub rms_norm_eps: f64,
    /// Beginning-of-text token.
    pub bos_token_id: Option<u32>,
    /// Every token that ends generation (end-of-text, end-of-turn).
    pub eos_token_ids: Vec<u32>,
    /// Whether prompts start with the BOS token.
    pub add_bos_token: bool,
    /// Whether the output projection reuses the token embeddings.
    pub tied_embeddings: bool,
    /// The chat template (Jinja), if the model has one.
    pub chat_template: Option<String>,
}

impl Config {
    /// The model's configuration, from a GGUF file's `{arch}.*` and `tokenizer.ggml.*` metadata.
    pub fn from_gguf(g: &mut Gguf) -> Result<Config> {
        let arch = g.meta_str("general.architecture").unwrap_or("").to_string();
        let architecture = match arch.as_str() {
            "llama" => Architecture::Llama,
            "gemma3" => Architecture::Gemma3,
            _ => {
                return Err(Error::model_file(
                    &g.path,
                    format!(
                        "has architecture `{arch}`; llm-lab runs `llama` and `gemma3` models only"
                    ),
                ))
            }
        };
        let k = |s: &str| format!("{arch}.{s}");
        let n_heads = g.meta_usize(&k("attention.head_count"))?;
        let d_model = g.meta_usize(&k("embedding_length"))?;
        // Gemma's heads are wider than d_model / n_heads (256 × 4 > 640): the file says so.
        let d_head = g
            .meta_usize(&k("attention.key_length"))
            .or_else(|_| g.meta_usize(&k("rope.dimension_count")))
            .unwrap_or(d_model / n_heads.max(1));
        if let Ok(v) = g.meta_usize(&k("attention.value_length")) {
            if v != d_head {
                return Err(Error::model_file(
                    &g.path,
                    format!("has value heads of width {v} and key heads of width {d_head}; llm-lab needs them equal"),
                ));
            }
        }
        let unsupported = |key: &str, neutral: f32| -> Result<()> {
            match g.meta_f32(&k(key)) {
                Some(x) if x != neutral => Err(Error::model_file(
                    &g.path,
                    format!("sets `{arch}.{key}` = {x}, which llm-lab does not implement"),
                )),
                _ => Ok(()),
            }
        };
        unsupported("final_logit_softcapping", 0.0)?;
        unsupported("attn_logit_softcapping", 0.0)?;
        unsupported("rope.scaling.factor", 1.0)?;
        let d_vocab = match g.content.tensor_infos.get("token_embd.weight") {
            Some(info) => match info.shape.dims() {
                &[vocab, width] if width == d_model => vocab,
                dims => {
                    return Err(Error::model_file(
                        &g.path,
                        format!("has the tensor `token_embd.weight` of shape {dims:?}, but `{arch}.embedding_length` = {d_model} needs [vocabulary size, {d_model}]; the file is corrupt or not a Llama model"),
                    ))
                }
            },
            None => g.meta_usize(&k("vocab_size"))?,
        };
        let rope_scaling = match g.content.tensor_infos.get("rope_freqs.weight") {
            None => None,
            Some(info) => {
                // Checked before reading: the declared size could be anything.
                if info.shape.dims() != [d_head / 2] {
                    return Err(Error::model_file(
                        &g.path,
                        format!("has the tensor `rope_freqs.weight` of shape {:?}, but head dim {d_head} needs [{}]", info.shape.dims(), d_head / 2),
                    ));
                }
                let t = g
                    .tensor("rope_freqs.weight", &Device::Cpu)?
                    .dequantize(&Device::Cpu)?;
                Some(RopeScaling::FrequencyFactors(
                    t.flatten_all()?.to_vec1::<f32>()?,
                ))
            }
        };
        if let Some(Value::Array(tokens)) = g.meta("tokenizer.ggml.tokens") {
            if tokens.len() > d_vocab {
                return Err(Error::model_file(
                    &g.path,
                    format!("has {} tokens in `tokenizer.ggml.tokens` but embeddings for only {d_vocab}; the file is corrupt", tokens.len()),
                ));
            }
        }
        let id = |key: &str| -> Result<Option<u32>> {
            match g.meta(key) {
                None => Ok(None),
                Some(v) => value_as_u64(v)
                    .and_then(|x| u32::try_from(x).ok())
                    .map(Some)
                    .ok_or_else(|| {
                        Error::model_file(
                            &g.path,
                            format!("has `{key}` = {v:?}, which is not a token id"),
                        )
                    }),
            }
        };
        let mut eos_token_ids: Vec<u32> = Vec::new();
        for key in [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ] {
            eos_token_ids.extend(id(key)?);
        }
        // llama.cpp also ends generation at Gemma's end-of-turn token.
        if let Some(tokens) = g.meta_strings("tokenizer.ggml.tokens") {
            if let Some(i) = tokens.iter().position(|t| *t == "<end_of_turn>") {
                eos_token_ids.push(i as u32);
            }
        }
        eos_token_ids.dedup();
        let rope_theta = g.meta_f32(&k("rope.freq_base")).unwrap_or(10_000.0);
        let gemma = architecture == Architecture::Gemma3;
        let sliding_window = match g.meta_usize(&k("attention.sliding_window")) {
            Ok(w) if gemma && w > 0 => Some(w),
            _ => None,
        };
        let config = Config {
            // The file name says what a student downloaded ("SmolLM2-135M-Instruct.Q4_1");
            // `general.name` is often a training-run label.
            name: g
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .or_else(|| g.meta_str("general.name").map(str::to_string))
                .unwrap_or_else(|| "GGUF model".into()),
            architecture,
            n_layers: g.meta_usize(&k("block_count"))?,
            n_heads,
            n_kv_heads: g
                .meta_usize(&k("attention.head_count_kv"))
                .unwrap_or(n_heads),
            d_head,
            d_model,
            d_mlp: g.meta_usize(&k("feed_forward_length"))?,
            d_vocab,
            n_ctx: g.meta_usize(&k("context_length")).unwrap_or(2048),
            rope_theta,
            // Gemma 3 files do not store the local base; llama.cpp's gemma3 loader uses 10,000
            // unless `rope.freq_base_swa` says otherwise.
            rope_theta_local: match sliding_window {
                Some(_) => g.meta_f32(&k("rope.freq_base_swa")).unwrap_or(10_000.0),
                None => rope_theta,
            },
            sliding_window,
            // llama.cpp's gemma3 default (five local layers, then one global), unless the file
            // gives the pattern.
            sliding_window_pattern: match sliding_window {
                Some(_) => g
                    .meta_usize(&k("attention.sliding_window_pattern"))
                    .unwrap_or(6),
                None => 0,
            },
            embedding_scale: if gemma { (d_model as f32).sqrt() } else { 1.0 },
            mlp_activation: if gemma {
                Activation::GeluTanh
            } else {
                Activation::Silu
            },
            rope_scaling,
            rms_norm_eps: g
                .meta_f32(&k("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5) as f64,
            bos_token_id: id("tokenizer.ggml.bos_token_id")?,
            eos_token_ids,
            add_bos_token: matches!(
                g.meta("tokenizer.ggml.add_bos_token"),
                Some(Value::Bool(true))
            ),
            tied_embeddings: !g.has("output.weight"),
            chat_template: g.meta_str("tokenizer.chat_template").map(str::to_string),
        };
        config.validate(&g.path)?;
        Ok(config)
    }

    /// Llama 3.2 1B (Instruct), as published by Meta: the lecture's model.
    pub fn llama_3_2_1b() -> Self {
        Self::llama_3_2("Llama 3.2 1B Instruct", 16, 32, 2048)
    }

    /// Llama 3.2 3B (Instruct), as published by Meta.
    ///
    /// ```
    /// let c = llm_lab::Config::llama_3_2_3b();
    /// assert_eq!((c.n_layers, c.n_heads, c.n_kv_heads, c.d_model), (28, 24, 8, 3072));
    /// ```
    pub fn llama_3_2_3b() -> Self {
        Self::llama_3_2("Llama 3.2 3B Instruct", 28, 24, 3072)
    }

    fn llama_3_2(name: &str, n_layers: usize, n_heads: usize, d_model: usize) -> Self {
        Config {
            name: name.into(),
            architecture: Architecture::Llama,
            n_layers,
            n_heads,
            n_kv_heads: 8,
            d_head: d_model / n_heads,
            d_model,
            d_mlp: 8192,
            d_vocab: 128_256,
            n_ctx: 131_072,
            rope_theta: 500_000.0,
            rope_theta_local: 500_000.0,
            sliding_window: None,
            sliding_window_pattern: 0,
            embedding_scale: 1.0,
            mlp_activation: Activation::Silu,
            rope_scaling: Some(RopeScaling::Llama3 {
                factor: 32.0,
                low_freq_factor: 1.0,
                high_freq_factor: 4.0,
                original_max_position_embeddings: 8192,
            }),
            rms_norm_eps: 1e-5,
            bos_token_id: Some(128_000),
            eos_token_ids: vec![128_001, 128_008, 128_009],
            add_bos_token: true,
            tied_embeddings: true,
            chat_template: None,
        }
    }

    /// How many query heads share one key/value head.
    pub fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Whether `layer` attends within the sliding window (Gemma 3's local layers) rather than
    /// to the whole context. llama.cpp's rule: with pattern p, layer l is global when
    /// `l % p == p − 1`.
    ///
    /// ```
    /// let mut c = llm_lab::Config::llama_3_2_1b();
    /// assert!(!c.is_local(0));
    /// (c.sliding_window, c.sliding_window_pattern) = (Some(512), 6);
    /// let global: Vec<usize> = (0..18).filter(|&l| !c.is_local(l)).collect();
    /// assert_eq!(global, [5, 11, 17]);
    /// ```
    pub fn is_local(&self, layer: usize) -> bool {
        let p = self.sliding_window_pattern;
        self.sliding_window.is_some() && (p == 0 || layer % p < p - 1)
    }

    /// The window of `layer`: `Some(w)` on a local layer, `None` on a global one.
    pub fn window(&self, layer: usize) -> Option<usize> {
        self.sliding_window.filter(|_| self.is_local(layer))
    }

    /// RoPE's inverse frequencies θ_i = base^(-2i/d), one per pair of dimensions, after scaling,
    /// for the global layers (every layer, on Llama).
    pub fn rope_inv_freqs(&self) -> Vec<f32> {
        self.rope_inv_freqs_with_base(self.rope_theta)
    }

    /// The inverse frequencies of the local layers (Gemma 3: base 10,000 instead of 10⁶, so
    /// their rotations turn faster and tell near positions apart).
    pub fn rope_inv_freqs_local(&self) -> Vec<f32> {
        self.rope_inv_freqs_with_base(self.rope_theta_local)
    }

    fn rope_inv_freqs_with_base(&self, theta: f32) -> Vec<f32> {
        let d = self.d_head;
        let base: Vec<f32> = (0..d / 2)
            .map(|i| 1.0 / theta.powf(2.0 * i as f32 / d as f32))
            .collect();
        match &self.rope_scaling {
            None => base,
            Some(RopeScaling::FrequencyFactors(f)) => {
                base.iter().zip(f).map(|(b, f)| b / f).collect()
            }
            Some(RopeScaling::Llama3 {
                factor,
                low_freq_factor,
                high_freq_factor,
                original_max_position_embeddings,
            }) => {
                let old = *original_max_position_embeddings as f32;
                let low_wavelen = old / low_freq_factor;
                let high_wavelen = old / high_freq_factor;
                base.iter()
                    .map(|&f| {
                        let wavelen = 2.0 * std::f32::consts::PI / f;
                        if wavelen < high_wavelen {
                            f
                        } else if wavelen > low_wavelen {
                            f / factor
                        } else {
                            let smooth = (old / wavelen - low_freq_factor)
                                / (high_freq_factor - low_freq_factor);
                            (1.0 - smooth) * f / factor + smooth * f
                        }
                    })
                    .collect()
            }
        }
    }

    /// Checks that the numbers fit together, so a broken file fails here with a clear message
    /// instead of deep inside a matrix multiplication.
    pub fn validate(&self, path: &Path) -> Result<()> {
        let bad = |msg: String| {
            Err(Error::model_file(
                path,
                format!("has an inconsistent configuration: {msg}"),
            ))
        };
        if self.n_layers == 0 || self.n_heads == 0 || self.n_kv_heads == 0 || self.d_model == 0 {
            return bad(format!(
                "layers={}, heads={}, kv heads={}, d_model={} must all be positive",
                self.n_layers, self.n_heads, self.n_kv_heads, self.d_model
            ));
        }
        if self.n_layers > 1024
            || self.n_heads > 1024
            || self.d_model > 1 << 16
            || self.d_vocab > 1 << 22
        {
            return bad(format!(
                "absurd sizes (layers={}, heads={}, d_model={}, vocab={})",
                self.n_layers, self.n_heads, self.d_model, self.d_vocab
            ));
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(format!(
                "{} heads is not a multiple of {} kv heads",
                self.n_heads, self.n_kv_heads
            ));
        }
        // Llama's heads split d_model; Gemma's need not (W_O maps n_heads·d_head back to d_model).
        // Checked: these numbers come from files, and overflow checks are off in every profile.
        let width = self.d_head.checked_mul(self.n_heads);
        let split = match self.architecture {
            Architecture::Gemma3 => width.is_some(),
            Architecture::Llama => width == Some(self.d_model),
        };
        if !self.d_head.is_multiple_of(2) || self.d_head == 0 || self.d_head > 1 << 12 || !split {
            return bad(format!(
                "head dim {} × {} heads must give d_model {} with an even head dim",
                self.d_head, self.n_heads, self.d_model
            ));
        }
        if self.sliding_window == Some(0) {
            return bad("a sliding window of 0 positions".into());
        }
        if self.d_vocab == 0 || self.d_mlp == 0 || self.d_mlp > 1 << 20 || self.n_ctx == 0 {
            return bad(format!(
                "vocabulary {}, MLP width {} and context {} must be positive (MLP at most {})",
                self.d_vocab,
                self.d_mlp,
                self.n_ctx,
                1 << 20
            ));
        }
        if let Some(id) = self
            .bos_token_id
            .into_iter()
            .chain(self.eos_token_ids.iter().copied())
            .find(|&id| id as usize >= self.d_vocab)
        {
            return bad(format!(
                "special token id {id} is outside the vocabulary of {} tokens",
                self.d_vocab
            ));
        }
        if let Some(RopeScaling::FrequencyFactors(f)) = &self.rope_scaling {
            if f.len() != self.d_head / 2 {
                return bad(format!(
                    "rope_freqs has {} entries, expected {}",
                    f.len(),
                    self.d_head / 2
                ));
            }
        }
        let positive = |x: f64| x > 0.0; // false for NaN too
        if !positive(self.rms_norm_eps)
            || !positive(self.rope_theta as f64)
            || !positive(self.rope_theta_local as f64)
        {
            return bad("rms eps and rope base must be positive".into());
        }
        Ok(())
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_json(path: &Path) -> Result<Self> {
        let text = crate::gguf::read_regular_to_string(path)?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| {
            Error::model_file(path, format!("is not valid JSON ({e}); download it again"))
        })?;
        let need = |key: &str| -> Result<usize> {
            v.get(key)
                .and_then(|x| x.as_u64())
                .map(|x| x as usize)
                .ok_or_else(|| Error::model_file(path, format!("lacks the integer field `{key}`")))
        };
        let n_heads = need("num_attention_heads")?;
        let d_model = need("hidden_size")?;
        let ids = |key: &str| -> Vec<u32> {
            match v.get(key) {
                Some(serde_json::Value::Array(a)) => a
                    .iter()
                    .filter_map(|x| x.as_u64())
                    .map(|x| x as u32)
                    .collect(),
                Some(x) => x.as_u64().map(|x| vec![x as u32]).unwrap_or_default(),
                None => vec![],
            }
        };
        let rope_scaling = match v.get("rope_scaling") {
            Some(s) if s.get("rope_type").and_then(|t| t.as_str()) == Some("llama3") => {
                let f = |k: &str| s.get(k).and_then(|x| x.as_f64()).unwrap_or(0.0) as f32;
                Some(RopeScaling::Llama3 {
                    factor: f("factor"),
                    low_freq_factor: f("low_freq_factor"),
                    high_freq_factor: f("high_freq_factor"),
                    original_max_position_embeddings: f("original_max_position_embeddings")
                        as usize,
                })
            }
            Some(serde_json::Value::Null) | None => None,
            Some(other) => {
                return Err(Error::model_file(
                    path,
                    format!(
                    "uses rope_scaling {other}, which llm-lab does not implement (only `llama3`)"
                ),
                ))
            }
        };
        let model_type = v
            .get("model_type")
            .and_then(|x| x.as_str())
            .unwrap_or("llama");
        if model_type.starts_with("gemma") {
            return Err(Error::model_file(
                path,
                format!("is a `{model_type}` checkpoint; llm-lab loads Gemma from GGUF files only (`Model::load_named(\"gemma-3-270m\")`)"),
            ));
        }
        let architecture = Architecture::Llama;
        let rope_theta = v
            .get("rope_theta")
            .and_then(|x| x.as_f64())
            .unwrap_or(10_000.0) as f32;
        let config = Config {
            name: v
                .get("_name_or_path")
                .and_then(|x| x.as_str())
                .unwrap_or("Hugging Face model")
                .to_string(),
            architecture,
            n_layers: need("num_hidden_layers")?,
            n_heads,
            n_kv_heads: need("num_key_value_heads").unwrap_or(n_heads),
            d_head: need("head_dim").unwrap_or(d_model / n_heads.max(1)),
            d_model,
            d_mlp: need("intermediate_size")?,
            d_vocab: need("vocab_size")?,
            n_ctx: need("max_position_embeddings").unwrap_or(2048),
            rope_theta,
            rope_theta_local: rope_theta,
            sliding_window: None,
            sliding_window_pattern: 0,
            embedding_scale: 1.0,
            mlp_activation: Activation::Silu,
            rope_scaling,
            rms_norm_eps: v
                .get("rms_norm_eps")
                .and_then(|x| x.as_f64())
                .unwrap_or(1e-5),
            bos_token_id: ids("bos_token_id").first().copied(),
            eos_token_ids: ids("eos_token_id"),
            add_bos_token: true,
            tied_embeddings: v
                .get("tie_word_embeddings")
                .and_then(|x| x.as_bool())
                .unwrap_or(false),
            chat_template: None,
        };
        config.validate(path)?;
        Ok(config)
    }
}
