//! The numbers that define a model: which architecture, how many layers and heads, how wide,
//! how long.
//!
//! Field names follow TransformerLens (`n_layers`, `n_heads`, `d_model`, `d_head`, `d_mlp`, `d_vocab`,
//! `n_ctx`) so that a student who moves on to Python finds the same words.

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::Device;
use serde::{Deserialize, Serialize};

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
    /// The model's configuration, from a GGUF file's `{arch}.*` metadata (read through the
    /// table of keys, `GgufKeys`) and its `tokenizer.ggml.*` special tokens.
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
        let keys = GgufKeys::read(g, &arch)?;
        let d_model = keys.d_model;
        // Gemma's heads are wider than d_model / n_heads (256 × 4 > 640): the file says so.
        let d_head = keys
            .key_length
            .or(keys.rope_dimension_count)
            .unwrap_or(d_model / keys.n_heads.max(1));
        if let Some(v) = keys.value_length.filter(|&v| v != d_head) {
            return Err(Error::model_file(
                &g.path,
                format!("has value heads of width {v} and key heads of width {d_head}; llm-lab needs them equal"),
            ));
        }
        for (key, value, neutral) in [
            ("final_logit_softcapping", keys.final_logit_softcapping, 0.0),
            ("attn_logit_softcapping", keys.attn_logit_softcapping, 0.0),
            ("rope.scaling.factor", keys.rope_scaling_factor, 1.0),
        ] {
            if let Some(x) = value.filter(|&x| x != neutral) {
                return Err(Error::model_file(
                    &g.path,
                    format!("sets `{arch}.{key}` = {x}, which llm-lab does not implement"),
                ));
            }
        }
        let d_vocab = match g.content.tensor_infos.get("token_embd.weight") {
            Some(info) => match info.shape.dims() {
                &[vocab, width] if width == d_model => vocab,
                dims => {
                    return Err(Error::model_file(
                        &g.path,
                        format!("has the tensor `token_embd.weight` of shape {dims:?}, but `{arch}.embedding_length` = {d_model} needs [vocabulary size, {d_model}]; the file is corrupt or not a {arch} model"),
                    ))
                }
            },
            None => keys.vocab_size.ok_or_else(|| {
                Error::model_file(&g.path, "has neither `token_embd.weight` nor a vocabulary size; is it a complete model?")
            })?,
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
        let rope_theta = keys.rope_freq_base.unwrap_or(10_000.0);
        let gemma = architecture == Architecture::Gemma3;
        let sliding_window = keys.sliding_window.filter(|&w| gemma && w > 0);
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
            n_layers: keys.n_layers,
            n_heads: keys.n_heads,
            n_kv_heads: keys.n_kv_heads.unwrap_or(keys.n_heads),
            d_head,
            d_model,
            d_mlp: keys.d_mlp,
            d_vocab,
            n_ctx: keys.n_ctx.unwrap_or(2048),
            rope_theta,
            // Gemma 3 files do not store the local base; llama.cpp's gemma3 loader uses 10,000
            // unless `rope.freq_base_swa` says otherwise.
            rope_theta_local: match sliding_window {
                Some(_) => keys.rope_freq_base_swa.unwrap_or(10_000.0),
                None => rope_theta,
            },
            sliding_window,
            // llama.cpp's gemma3 default (five local layers, then one global), unless the file
            // gives the pattern.
            sliding_window_pattern: match sliding_window {
                Some(_) => keys.sliding_window_pattern.unwrap_or(6),
                None => 0,
            },
            embedding_scale: if gemma { (d_model as f32).sqrt() } else { 1.0 },
            mlp_activation: if gemma {
                Activation::GeluTanh
            } else {
                Activation::Silu
            },
            rope_scaling,
            rms_norm_eps: keys.rms_norm_eps.unwrap_or(1e-5) as f64,
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

    /// Reads a Hugging Face `config.json` (the fields of `HfConfig`).
    pub fn from_hf_json(path: &Path) -> Result<Self> {
        let text = crate::gguf::read_regular_to_string(path)?;
        let de = &mut serde_json::Deserializer::from_str(&text);
        let hf: HfConfig = serde_path_to_error::deserialize(de).map_err(|e| {
            Error::model_file(
                path,
                format!(
                    "is not a config.json llm-lab can read (at `{}`: {}); download it again",
                    e.path(),
                    e.inner()
                ),
            )
        })?;
        if hf.model_type.starts_with("gemma") {
            return Err(Error::model_file(
                path,
                format!("is a `{}` checkpoint; llm-lab loads Gemma from GGUF files only (`Model::load_named(\"gemma-3-270m\")`)", hf.model_type),
            ));
        }
        let rope_scaling = match hf.rope_scaling {
            None | Some(serde_json::Value::Null) => None,
            Some(s) if s.get("rope_type").and_then(|t| t.as_str()) == Some("llama3") => {
                let s: HfLlama3Scaling = serde_json::from_value(s).map_err(|e| {
                    Error::model_file(
                        path,
                        format!("has a llama3 rope_scaling llm-lab cannot read ({e})"),
                    )
                })?;
                Some(RopeScaling::Llama3 {
                    factor: s.factor,
                    low_freq_factor: s.low_freq_factor,
                    high_freq_factor: s.high_freq_factor,
                    original_max_position_embeddings: s.original_max_position_embeddings,
                })
            }
            Some(other) => {
                return Err(Error::model_file(
                    path,
                    format!(
                    "uses rope_scaling {other}, which llm-lab does not implement (only `llama3`)"
                ),
                ))
            }
        };
        let rope_theta = hf.rope_theta.unwrap_or(10_000.0) as f32;
        let n_heads = hf.num_attention_heads;
        let config = Config {
            name: hf
                .name_or_path
                .unwrap_or_else(|| "Hugging Face model".into()),
            architecture: Architecture::Llama,
            n_layers: hf.num_hidden_layers,
            n_heads,
            n_kv_heads: hf.num_key_value_heads.unwrap_or(n_heads),
            d_head: hf.head_dim.unwrap_or(hf.hidden_size / n_heads.max(1)),
            d_model: hf.hidden_size,
            d_mlp: hf.intermediate_size,
            d_vocab: hf.vocab_size,
            n_ctx: hf.max_position_embeddings.unwrap_or(2048),
            rope_theta,
            rope_theta_local: rope_theta,
            sliding_window: None,
            sliding_window_pattern: 0,
            embedding_scale: 1.0,
            mlp_activation: Activation::Silu,
            rope_scaling,
            rms_norm_eps: hf.rms_norm_eps.unwrap_or(1e-5),
            bos_token_id: hf.bos_token_id.and_then(|ids| ids.first()),
            eos_token_ids: hf.eos_token_id.map(TokenIds::all).unwrap_or_default(),
            add_bos_token: true,
            tied_embeddings: hf.tie_word_embeddings,
            chat_template: None,
        };
        config.validate(path)?;
        Ok(config)
    }
}

/// The `{arch}.*` metadata of a GGUF file that llm-lab reads, by key with the architecture's
/// prefix removed: the one table of GGUF keys, read by [`Config::from_gguf`] and written by
/// `Model::save_gguf`. Unknown keys are ignored; a key of the wrong type is an error that names it.
#[derive(Debug, Default, Deserialize, Serialize)]
pub(crate) struct GgufKeys {
    #[serde(rename = "block_count")]
    n_layers: usize,
    #[serde(rename = "attention.head_count")]
    n_heads: usize,
    #[serde(rename = "attention.head_count_kv")]
    n_kv_heads: Option<usize>,
    #[serde(rename = "attention.key_length")]
    key_length: Option<usize>,
    #[serde(rename = "attention.value_length")]
    value_length: Option<usize>,
    #[serde(rename = "rope.dimension_count")]
    rope_dimension_count: Option<usize>,
    #[serde(rename = "embedding_length")]
    d_model: usize,
    #[serde(rename = "feed_forward_length")]
    d_mlp: usize,
    #[serde(rename = "vocab_size")]
    vocab_size: Option<usize>,
    #[serde(rename = "context_length")]
    n_ctx: Option<usize>,
    #[serde(rename = "rope.freq_base")]
    rope_freq_base: Option<f32>,
    #[serde(rename = "rope.freq_base_swa")]
    rope_freq_base_swa: Option<f32>,
    #[serde(rename = "attention.sliding_window")]
    sliding_window: Option<usize>,
    #[serde(rename = "attention.sliding_window_pattern")]
    sliding_window_pattern: Option<usize>,
    #[serde(rename = "attention.layer_norm_rms_epsilon")]
    rms_norm_eps: Option<f32>,
    /// Not implemented: refused unless 0.
    #[serde(rename = "final_logit_softcapping")]
    final_logit_softcapping: Option<f32>,
    /// Not implemented: refused unless 0.
    #[serde(rename = "attn_logit_softcapping")]
    attn_logit_softcapping: Option<f32>,
    /// Not implemented: refused unless 1.
    #[serde(rename = "rope.scaling.factor")]
    rope_scaling_factor: Option<f32>,
}

impl GgufKeys {
    /// The keys a file needs for `Model::load` to read `c` back.
    fn of_config(c: &Config) -> Self {
        let gemma = c.architecture == Architecture::Gemma3;
        GgufKeys {
            n_layers: c.n_layers,
            n_heads: c.n_heads,
            n_kv_heads: Some(c.n_kv_heads),
            key_length: Some(c.d_head),
            value_length: Some(c.d_head),
            rope_dimension_count: Some(c.d_head),
            d_model: c.d_model,
            d_mlp: c.d_mlp,
            vocab_size: Some(c.d_vocab),
            n_ctx: Some(c.n_ctx),
            rope_freq_base: Some(c.rope_theta),
            rope_freq_base_swa: c.sliding_window.map(|_| c.rope_theta_local),
            sliding_window: c.sliding_window.filter(|_| gemma),
            sliding_window_pattern: c.sliding_window.map(|_| c.sliding_window_pattern),
            rms_norm_eps: Some(c.rms_norm_eps as f32),
            ..Default::default()
        }
    }

    /// `general.architecture` and the `{arch}.*` keys of `c`, as GGUF metadata (integers as
    /// u32 where they fit, floats as f32, as llama.cpp's converter writes them; a key the config
    /// leaves unset serialises as null and is not written).
    pub(crate) fn metadata(c: &Config) -> Result<Vec<(String, Value)>> {
        let arch = c.architecture.gguf_name();
        let json = serde_json::to_value(Self::of_config(c))
            .map_err(|e| Error::invalid(format!("cannot write the config's keys ({e})")))?;
        let mut out = vec![(
            "general.architecture".to_string(),
            Value::String(arch.into()),
        )];
        for (k, v) in json.as_object().into_iter().flatten() {
            let value = match v {
                serde_json::Value::Number(n) => match (n.as_u64(), n.as_f64()) {
                    (Some(x), _) => u32::try_from(x).map_or(Value::U64(x), Value::U32),
                    (None, Some(x)) => Value::F32(x as f32),
                    _ => continue,
                },
                _ => continue,
            };
            out.push((format!("{arch}.{k}"), value));
        }
        Ok(out)
    }

    /// The `{arch}.*` keys of `g`, deserialised through JSON values.
    fn read(g: &Gguf, arch: &str) -> Result<Self> {
        let prefix = format!("{arch}.");
        let map: serde_json::Map<String, serde_json::Value> = g
            .content
            .metadata
            .iter()
            .filter_map(|(k, v)| Some((k.strip_prefix(&prefix)?.to_string(), to_json(v))))
            .collect();
        serde_path_to_error::deserialize(serde_json::Value::Object(map)).map_err(|e| {
            let key = e.path().to_string();
            let what = match e.inner().to_string() {
                m if m.starts_with("missing field") => {
                    let field = m.trim_start_matches("missing field ").trim_matches('`');
                    format!("lacks the metadata `{arch}.{field}`; is it a complete {arch} GGUF?")
                }
                m => format!("has `{arch}.{key}` of the wrong kind ({m})"),
            };
            Error::model_file(&g.path, what)
        })
    }
}

/// A GGUF metadata value as JSON, for serde. A non-finite float becomes a string, so that a
/// numeric field refuses it instead of reading a default.
fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    let float =
        |x: f64| serde_json::Number::from_f64(x).map_or(J::String(x.to_string()), J::Number);
    match v {
        Value::F32(x) => float(*x as f64),
        Value::F64(x) => float(*x),
        Value::Bool(b) => J::Bool(*b),
        Value::String(s) => J::String(s.clone()),
        Value::Array(a) => J::Array(a.iter().map(to_json).collect()),
        Value::I8(x) => J::from(*x),
        Value::I16(x) => J::from(*x),
        Value::I32(x) => J::from(*x),
        Value::I64(x) => J::from(*x),
        Value::U8(x) => J::from(*x),
        Value::U16(x) => J::from(*x),
        Value::U32(x) => J::from(*x),
        Value::U64(x) => J::from(*x),
    }
}

/// The fields of a Hugging Face Llama `config.json` that llm-lab reads.
#[derive(Debug, Deserialize)]
struct HfConfig {
    #[serde(default = "llama")]
    model_type: String,
    #[serde(rename = "_name_or_path")]
    name_or_path: Option<String>,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    hidden_size: usize,
    intermediate_size: usize,
    vocab_size: usize,
    max_position_embeddings: Option<usize>,
    rope_theta: Option<f64>,
    rms_norm_eps: Option<f64>,
    bos_token_id: Option<TokenIds>,
    eos_token_id: Option<TokenIds>,
    #[serde(default)]
    tie_word_embeddings: bool,
    /// Only `{"rope_type": "llama3", …}` is implemented.
    rope_scaling: Option<serde_json::Value>,
}

fn llama() -> String {
    "llama".into()
}

/// Hugging Face's `rope_scaling` of Llama 3.1 and later.
#[derive(Debug, Deserialize)]
struct HfLlama3Scaling {
    factor: f32,
    low_freq_factor: f32,
    high_freq_factor: f32,
    original_max_position_embeddings: usize,
}

/// A token id or a list of them (config.json writes `eos_token_id` either way).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

impl TokenIds {
    fn first(&self) -> Option<u32> {
        match self {
            TokenIds::One(x) => Some(*x),
            TokenIds::Many(v) => v.first().copied(),
        }
    }

    fn all(self) -> Vec<u32> {
        match self {
            TokenIds::One(x) => vec![x],
            TokenIds::Many(v) => v,
        }
    }
}
