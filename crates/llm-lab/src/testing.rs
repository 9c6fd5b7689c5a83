//! Tiny models with random weights, written as real GGUF files or Hugging Face folders, so that
//! every code path can be tested in milliseconds without downloading anything.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::error::Result;

/// Writes the tiny model `spec` into a fresh temporary folder and loads it; keep the folder
/// alive as long as the model is used.
///
/// ```
/// use llm_lab::testing::{tiny_model, TinySpec};
/// let (_dir, model) = tiny_model(&TinySpec::default())?;
/// assert_eq!(model.config.n_layers, 2);
/// # Ok::<(), llm_lab::Error>(())
/// ```
pub fn tiny_model(spec: &TinySpec) -> Result<(tempfile::TempDir, crate::Model)> {
    let dir = tempfile::tempdir().map_err(|e| {
        crate::error::Error::io("cannot create a folder in", std::env::temp_dir(), e)
    })?;
    let path = dir.path().join("tiny.gguf");
    write_tiny_gguf(&path, spec)?;
    let model = crate::Model::load(&path)?;
    Ok((dir, model))
}

pub use crate::compare::max_abs_diff;
pub use crate::scripted::ScriptedModel;

/// The shape and storage of a tiny test model.
#[derive(Debug, Clone)]
pub struct TinySpec {
    pub n_layers: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub d_model: usize,
    pub d_mlp: usize,
    /// Format of the projection matrices.
    pub format: GgmlDType,
    /// Format of the token embeddings.
    pub embed_format: GgmlDType,
    /// Whether the file has its own `output.weight`.
    pub untied_output: bool,
    /// Seed of the random weights.
    pub seed: u64,
    /// Tensors to leave out (to test error messages).
    pub skip: Vec<String>,
}

impl Default for TinySpec {
    fn default() -> Self {
        TinySpec {
            n_layers: 2,
            n_heads: 4,
            n_kv_heads: 2,
            d_model: 64,
            d_mlp: 128,
            format: GgmlDType::F32,
            embed_format: GgmlDType::F32,
            untied_output: false,
            seed: 1,
            skip: vec![],
        }
    }
}

/// The byte-level alphabet plus two control tokens: 258 tokens.
pub fn tiny_vocab() -> Vec<String> {
    let mut v: Vec<String> = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet()
        .into_iter()
        .map(|c| c.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    v.push("<|endoftext|>".into());
    v.push("<|im_end|>".into());
    v
}

/// The tiny model's weights in GGUF naming, as f32 tensors `[out, in]`.
pub fn tiny_weights(spec: &TinySpec) -> Result<Vec<(String, Tensor)>> {
    let mut rng = crate::sampling::Rng::new(spec.seed);
    let dev = Device::Cpu;
    let mut rand = |shape: (usize, usize), scale: f32| -> Result<Tensor> {
        let v: Vec<f32> = (0..shape.0 * shape.1)
            .map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * scale)
            .collect();
        Ok(Tensor::from_vec(v, shape, &dev)?)
    };
    let d = spec.d_model;
    let d_head = d / spec.n_heads;
    let kv = spec.n_kv_heads * d_head;
    let vocab = tiny_vocab().len();
    let s = 1.0 / (d as f32).sqrt();
    let mut t = vec![("token_embd.weight".to_string(), rand((vocab, d), 1.0)?)];
    for l in 0..spec.n_layers {
        let n = |x: &str| format!("blk.{l}.{x}.weight");
        t.push((n("attn_norm"), (rand((1, d), 0.2)? + 1.0)?.flatten_all()?));
        t.push((n("attn_q"), rand((d, d), 2.0 * s)?));
        t.push((n("attn_k"), rand((kv, d), 2.0 * s)?));
        t.push((n("attn_v"), rand((kv, d), s)?));
        t.push((n("attn_output"), rand((d, d), s)?));
        t.push((n("ffn_norm"), (rand((1, d), 0.2)? + 1.0)?.flatten_all()?));
        t.push((n("ffn_gate"), rand((spec.d_mlp, d), s)?));
        t.push((n("ffn_up"), rand((spec.d_mlp, d), s)?));
        t.push((
            n("ffn_down"),
            rand((d, spec.d_mlp), 1.0 / (spec.d_mlp as f32).sqrt())?,
        ));
    }
    t.push((
        "output_norm.weight".into(),
        (rand((1, d), 0.2)? + 1.0)?.flatten_all()?,
    ));
    if spec.untied_output {
        t.push(("output.weight".into(), rand((vocab, d), s)?));
    }
    t.retain(|(n, _)| !spec.skip.contains(n));
    Ok(t)
}

/// Writes the tiny model as a GGUF file with complete Llama metadata and a byte-level tokenizer.
pub fn write_tiny_gguf(path: &Path, spec: &TinySpec) -> Result<()> {
    let vocab = tiny_vocab();
    let n = vocab.len();
    let u = |x: usize| Value::U32(x as u32);
    let mut meta: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("general.name", Value::String("tiny test llama".into())),
        ("llama.block_count", u(spec.n_layers)),
        ("llama.attention.head_count", u(spec.n_heads)),
        ("llama.attention.head_count_kv", u(spec.n_kv_heads)),
        ("llama.embedding_length", u(spec.d_model)),
        ("llama.feed_forward_length", u(spec.d_mlp)),
        ("llama.rope.dimension_count", u(spec.d_model / spec.n_heads)),
        ("llama.rope.freq_base", Value::F32(10_000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("llama.context_length", u(64)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("default".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(vocab.iter().map(|t| Value::String(t.clone())).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(
                (0..n)
                    .map(|i| Value::I32(if i >= n - 2 { 3 } else { 1 }))
                    .collect(),
            ),
        ),
        ("tokenizer.ggml.merges", Value::Array(vec![])),
        ("tokenizer.ggml.bos_token_id", u(n - 2)),
        ("tokenizer.ggml.eos_token_id", u(n - 1)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(false)),
    ];
    meta.push(("tokenizer.chat_template", Value::String(CHATML.into())));
    let mut tensors = vec![];
    for (name, t) in tiny_weights(spec)? {
        let format = if name == "token_embd.weight" {
            spec.embed_format
        } else if name.ends_with("norm.weight") {
            GgmlDType::F32
        } else {
            spec.format
        };
        tensors.push((name, QTensor::quantize(&t, format)?));
    }
    let mut f =
        std::fs::File::create(path).map_err(|e| crate::Error::io("cannot create", path, e))?;
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut f, &meta_refs, &tensor_refs)?;
    Ok(())
}

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Writes the same tiny model (F32) as a Hugging Face folder: config.json, model.safetensors and
/// tokenizer.json, with Q and K rows in Hugging Face's (un-permuted) order.
pub fn write_tiny_hf_folder(dir: &Path, spec: &TinySpec) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| crate::Error::io("cannot create", dir, e))?;
    let d_head = spec.d_model / spec.n_heads;
    // GGUF rows of a head are (pair i, member j); Hugging Face's are (member j, pair i).
    let unpermute = |t: &Tensor, heads: usize| -> Result<Tensor> {
        let (rows, cols) = t.dims2()?;
        Ok(t.reshape((heads, d_head / 2, 2, cols))?
            .transpose(1, 2)?
            .reshape((rows, cols))?)
    };
    let mut st: HashMap<String, Tensor> = HashMap::new();
    for (name, t) in tiny_weights(spec)? {
        let hf = if name == "token_embd.weight" {
            "model.embed_tokens.weight".to_string()
        } else if name == "output_norm.weight" {
            "model.norm.weight".into()
        } else if name == "output.weight" {
            "lm_head.weight".into()
        } else {
            let (l, rest) = name["blk.".len()..].split_once('.').unwrap_or_default();
            let part = match rest.trim_end_matches(".weight") {
                "attn_norm" => "input_layernorm",
                "ffn_norm" => "post_attention_layernorm",
                "attn_q" => "self_attn.q_proj",
                "attn_k" => "self_attn.k_proj",
                "attn_v" => "self_attn.v_proj",
                "attn_output" => "self_attn.o_proj",
                "ffn_gate" => "mlp.gate_proj",
                "ffn_up" => "mlp.up_proj",
                _ => "mlp.down_proj",
            };
            format!("model.layers.{l}.{part}.weight")
        };
        let t = if name.ends_with("attn_q.weight") {
            unpermute(&t, spec.n_heads)?
        } else if name.ends_with("attn_k.weight") {
            unpermute(&t, spec.n_kv_heads)?
        } else {
            t
        };
        st.insert(hf, t.to_dtype(DType::F32)?.contiguous()?);
    }
    candle_core::safetensors::save(&st, dir.join("model.safetensors"))?;
    let vocab = tiny_vocab();
    let config = serde_json::json!({
        "model_type": "llama",
        "num_hidden_layers": spec.n_layers,
        "num_attention_heads": spec.n_heads,
        "num_key_value_heads": spec.n_kv_heads,
        "hidden_size": spec.d_model,
        "intermediate_size": spec.d_mlp,
        "vocab_size": vocab.len(),
        "max_position_embeddings": 64,
        "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5,
        "bos_token_id": vocab.len() - 2,
        "eos_token_id": vocab.len() - 1,
        "tie_word_embeddings": !spec.untied_output,
    });
    std::fs::write(dir.join("config.json"), config.to_string())
        .map_err(|e| crate::Error::io("cannot write", dir, e))?;
    std::fs::write(
        dir.join("tokenizer_config.json"),
        serde_json::json!({"add_bos_token": false, "chat_template": CHATML}).to_string(),
    )
    .map_err(|e| crate::Error::io("cannot write", dir, e))?;
    // The tokenizer is the one rebuilt from the GGUF, saved as tokenizer.json.
    let tmp = tempfile::tempdir()
        .map_err(|e| crate::Error::io("cannot create a temporary folder", "/tmp", e))?;
    let gguf = tmp.path().join("t.gguf");
    write_tiny_gguf(&gguf, spec)?;
    let g = crate::gguf::Gguf::open(&gguf)?;
    let tok = crate::tokenizer::Tokenizer::from_gguf(&g)?;
    tok.inner.save(dir.join("tokenizer.json"), false)?;
    Ok(())
}
