//! The numbers that define a Llama-family model: how many layers and heads, how wide, how long.
//!
//! Field names follow TransformerLens (`n_layers`, `n_heads`, `d_model`, `d_head`, `d_mlp`, `d_vocab`,
//! `n_ctx`) so that a student who moves on to Python finds the same words.

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use candle_core::Device;

use crate::error::{Error, Result};
use crate::gguf::{value_as_u64, Gguf};

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

/// The shape of a Llama-family model.
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
    /// Architecture as the file names it (`llama`).
    pub architecture: String,
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
    /// RoPE base frequency θ.
    pub rope_theta: f32,
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
        if arch != "llama" {
            return Err(Error::model_file(
                &g.path,
                format!(
                    "has architecture `{arch}`; llm-lab runs Llama-family models (`llama`) only"
                ),
            ));
        }
        let k = |s: &str| format!("{arch}.{s}");
        let n_heads = g.meta_usize(&k("attention.head_count"))?;
        let d_model = g.meta_usize(&k("embedding_length"))?;
        let d_head = g
            .meta_usize(&k("rope.dimension_count"))
            .unwrap_or(d_model / n_heads.max(1));
        let d_vocab = match g.content.tensor_infos.get("token_embd.weight") {
            Some(info) => info.shape.dims()[0],
            None => g.meta_usize(&k("vocab_size"))?,
        };
        let rope_scaling = if g.has("rope_freqs.weight") {
            let t = g
                .tensor("rope_freqs.weight", &Device::Cpu)?
                .dequantize(&Device::Cpu)?;
            Some(RopeScaling::FrequencyFactors(
                t.flatten_all()?.to_vec1::<f32>()?,
            ))
        } else {
            None
        };
        let id = |key: &str| g.meta(key).and_then(value_as_u64).map(|x| x as u32);
        let mut eos_token_ids: Vec<u32> = [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ]
        .iter()
        .filter_map(|key| id(key))
        .collect();
        eos_token_ids.dedup();
        let config = Config {
            // The file name says what a student downloaded ("SmolLM2-135M-Instruct.Q4_1");
            // `general.name` is often a training-run label.
            name: g
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .or_else(|| g.meta_str("general.name").map(str::to_string))
                .unwrap_or_else(|| "GGUF model".into()),
            architecture: arch.clone(),
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
            rope_theta: g.meta_f32(&k("rope.freq_base")).unwrap_or(10_000.0),
            rope_scaling,
            rms_norm_eps: g
                .meta_f32(&k("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5) as f64,
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
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
            architecture: "llama".into(),
            n_layers,
            n_heads,
            n_kv_heads: 8,
            d_head: d_model / n_heads,
            d_model,
            d_mlp: 8192,
            d_vocab: 128_256,
            n_ctx: 131_072,
            rope_theta: 500_000.0,
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

    /// RoPE's inverse frequencies θ_i = base^(-2i/d), one per pair of dimensions, after scaling.
    pub fn rope_inv_freqs(&self) -> Vec<f32> {
        let d = self.d_head;
        let base: Vec<f32> = (0..d / 2)
            .map(|i| 1.0 / self.rope_theta.powf(2.0 * i as f32 / d as f32))
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
        if !self.d_head.is_multiple_of(2) || self.d_head * self.n_heads != self.d_model {
            return bad(format!(
                "head dim {} × {} heads does not give d_model {} with an even head dim",
                self.d_head, self.n_heads, self.d_model
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
        if !positive(self.rms_norm_eps) || !positive(self.rope_theta as f64) {
            return bad("rms eps and rope base must be positive".into());
        }
        Ok(())
    }

    /// Reads a Hugging Face `config.json`.
    pub fn from_hf_json(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))?;
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
        let config = Config {
            name: v
                .get("_name_or_path")
                .and_then(|x| x.as_str())
                .unwrap_or("Hugging Face model")
                .to_string(),
            architecture: v
                .get("model_type")
                .and_then(|x| x.as_str())
                .unwrap_or("llama")
                .to_string(),
            n_layers: need("num_hidden_layers")?,
            n_heads,
            n_kv_heads: need("num_key_value_heads").unwrap_or(n_heads),
            d_head: need("head_dim").unwrap_or(d_model / n_heads.max(1)),
            d_model,
            d_mlp: need("intermediate_size")?,
            d_vocab: need("vocab_size")?,
            n_ctx: need("max_position_embeddings").unwrap_or(2048),
            rope_theta: v
                .get("rope_theta")
                .and_then(|x| x.as_f64())
                .unwrap_or(10_000.0) as f32,
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
