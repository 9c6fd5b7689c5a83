//! Tiny models with random weights, written as real GGUF files or Hugging Face folders, so that
//! every code path can be tested in milliseconds without downloading anything.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Device, Tensor};

use crate::error::Result;
use crate::model::schema::{self, Kind, Slot, TensorSpec};
use crate::model::{Architecture, Config};

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

/// The real Gemma 3 270M file for tests that need it: `$LLM_LAB_GEMMA` if set, else the
/// registry's `gemma-3-270m` if it is in the cache (`cargo xtask fetch` puts it there; a test
/// never downloads). `None` when neither is there (see [`missing`]: under `CI=true` the test
/// fails).
pub fn real_gemma(test: &str) -> Option<std::path::PathBuf> {
    use crate::models::GEMMA_3_270M;
    if let Some(p) = std::env::var_os("LLM_LAB_GEMMA") {
        return Some(p.into());
    }
    if let Some(p) = crate::models::cached(GEMMA_3_270M) {
        return Some(p);
    }
    missing(
        test,
        "the real Gemma 3 270M: run `cargo xtask fetch`, or set LLM_LAB_GEMMA to gemma-3-270m-q4_k_m.gguf",
    );
    None
}

/// The test `test` cannot run here: `what` it needs is missing. Under `CI=true` the test fails,
/// naming it; elsewhere (a developer's machine) it prints that the test is skipped.
///
/// ```should_panic
/// std::env::set_var("CI", "true");
/// llm_lab::testing::missing("a_test", "a model file");
/// ```
pub fn missing(test: &str, what: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{test}: a prerequisite is missing (CI=true fails instead of skipping): {what}");
    }
    eprintln!("SKIPPED {test}: missing {what}");
    // `cargo xtask test` counts the skipped tests from this file.
    if let Some(log) = std::env::var_os("LLM_LAB_SKIPPED_LOG") {
        use std::io::Write;
        let line = format!("{test}: missing {what}\n");
        let file = std::fs::OpenOptions::new().append(true).open(log);
        let _ = file.and_then(|mut f| f.write_all(line.as_bytes()));
    }
}

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
    /// Llama (byte-level BPE vocabulary) or Gemma 3 (SentencePiece vocabulary, q/k norms,
    /// post-norms, sliding window).
    pub architecture: Architecture,
    /// Width of a head; `None`: `d_model / n_heads` (Gemma's may differ).
    pub d_head: Option<usize>,
    /// Gemma: the local layers' window.
    pub sliding_window: usize,
    /// Gemma: every `sliding_window_pattern`-th layer is global.
    pub sliding_window_pattern: usize,
}

impl TinySpec {
    /// A tiny Gemma 3: three layers (two local with a window of 4, then one global), heads
    /// wider than `d_model / n_heads`, one KV head shared by four query heads.
    ///
    /// ```
    /// use llm_lab::testing::{tiny_model, TinySpec};
    /// let (_dir, model) = tiny_model(&TinySpec::gemma())?;
    /// let c = &model.config;
    /// assert_eq!((c.n_layers, c.n_heads, c.n_kv_heads, c.d_head), (3, 4, 1, 32));
    /// assert_eq!((c.is_local(1), c.is_local(2)), (true, false));
    /// # Ok::<(), llm_lab::Error>(())
    /// ```
    pub fn gemma() -> Self {
        TinySpec {
            n_layers: 3,
            n_kv_heads: 1,
            d_head: Some(32),
            architecture: Architecture::Gemma3,
            ..Default::default()
        }
    }

    fn d_head(&self) -> usize {
        self.d_head.unwrap_or(self.d_model / self.n_heads)
    }

    /// The config the tiny model's file describes (what `Model::load` reads back).
    pub fn config(&self) -> Config {
        Config {
            name: "tiny".into(),
            architecture: self.architecture,
            n_layers: self.n_layers,
            n_heads: self.n_heads,
            n_kv_heads: self.n_kv_heads,
            d_head: self.d_head(),
            d_model: self.d_model,
            d_mlp: self.d_mlp,
            d_vocab: self.vocab().len(),
            tied_embeddings: !self.untied_output,
            ..Config::llama_3_2_1b()
        }
    }

    fn vocab(&self) -> Vec<String> {
        match self.architecture {
            Architecture::Llama => tiny_vocab(),
            Architecture::Gemma3 => tiny_spm_vocab().into_iter().map(|(p, _, _)| p).collect(),
        }
    }
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
            architecture: Architecture::Llama,
            d_head: None,
            sliding_window: 4,
            sliding_window_pattern: 3,
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

/// A SentencePiece vocabulary in Gemma's layout: (piece, score, GGUF token type). Ids 0–3 are
/// `<pad>`, `<eos>`, `<bos>`, `<unk>`; then two control tokens, a user-defined `\n\n`, the 256
/// byte tokens, and pieces for lower-case letters and a few words, with and without `▁`.
pub fn tiny_spm_vocab() -> Vec<(String, f32, i32)> {
    let mut v: Vec<(String, f32, i32)> = ["<pad>", "<eos>", "<bos>", "<unk>"]
        .iter()
        .map(|p| (p.to_string(), -1000.0, 3))
        .collect();
    v.push(("<start_of_turn>".into(), -1000.0, 3));
    v.push(("<end_of_turn>".into(), -1000.0, 3));
    v.push(("\n\n".into(), -1000.0, 4));
    v.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), 0.0, 6)));
    let mut score = 0.0;
    let mut normal = |p: String, v: &mut Vec<(String, f32, i32)>| {
        score -= 1.0;
        v.push((p, score, 1));
    };
    for w in ["▁the", "th", "he", "er", "▁", "\n"] {
        normal(w.into(), &mut v);
    }
    for c in 'a'..='z' {
        normal(c.to_string(), &mut v);
        normal(format!("▁{c}"), &mut v);
    }
    v
}

/// The tiny model's weights in GGUF naming, as f32 tensors `[out, in]`: every tensor of its
/// architecture's table ([`schema`]), in file order.
pub fn tiny_weights(spec: &TinySpec) -> Result<Vec<(String, Tensor)>> {
    Ok(tiny_tensors(spec)?
        .into_iter()
        .map(|(t, l, x)| (t.gguf_name(l), x))
        .filter(|(n, _)| !spec.skip.contains(n))
        .collect())
}

/// Random values for every tensor of the tiny model, with the table's entry and layer of each.
fn tiny_tensors(spec: &TinySpec) -> Result<Vec<(&'static TensorSpec, Option<usize>, Tensor)>> {
    let mut rng = crate::rng::Rng::new(spec.seed);
    let config = spec.config();
    let mut out = vec![];
    for (t, l) in schema::instances(&config) {
        let shape = t.shape(&config);
        let n: usize = shape.iter().product();
        // Matrices uniform in ±init/√in (the embeddings in ±init); gains around 1, as GGUF
        // stores Gemma's `1 + w`.
        let (scale, offset) = match (t.kind, t.slot) {
            (Kind::Gain, _) => (t.init, 1.0),
            (Kind::Matrix, Slot::Embed) => (t.init, 0.0),
            (Kind::Matrix, _) => (t.init / (shape[1] as f32).sqrt(), 0.0),
        };
        let v: Vec<f32> = (0..n)
            .map(|_| (rng.next_f64() as f32 * 2.0 - 1.0) * scale + offset)
            .collect();
        out.push((t, l, Tensor::from_vec(v, shape, &Device::Cpu)?));
    }
    Ok(out)
}

/// Writes the tiny model as a GGUF file with complete metadata: a Llama with a byte-level BPE
/// tokenizer, or a Gemma 3 with a SentencePiece one.
pub fn write_tiny_gguf(path: &Path, spec: &TinySpec) -> Result<()> {
    let meta = match spec.architecture {
        Architecture::Llama => tiny_llama_metadata(spec),
        Architecture::Gemma3 => tiny_gemma_metadata(spec),
    };
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

/// Gemma 3's keys as llama.cpp's converter writes them (plus `sliding_window_type`, the name
/// candle-transformers reads the pattern under).
fn tiny_gemma_metadata(spec: &TinySpec) -> Vec<(&'static str, Value)> {
    let vocab = tiny_spm_vocab();
    let u = |x: usize| Value::U32(x as u32);
    vec![
        ("general.architecture", Value::String("gemma3".into())),
        ("general.name", Value::String("tiny test gemma".into())),
        ("gemma3.block_count", u(spec.n_layers)),
        ("gemma3.attention.head_count", u(spec.n_heads)),
        ("gemma3.attention.head_count_kv", u(spec.n_kv_heads)),
        ("gemma3.attention.key_length", u(spec.d_head())),
        ("gemma3.attention.value_length", u(spec.d_head())),
        ("gemma3.embedding_length", u(spec.d_model)),
        ("gemma3.feed_forward_length", u(spec.d_mlp)),
        ("gemma3.rope.freq_base", Value::F32(1_000_000.0)),
        ("gemma3.attention.layer_norm_rms_epsilon", Value::F32(1e-6)),
        ("gemma3.attention.sliding_window", u(spec.sliding_window)),
        (
            "gemma3.attention.sliding_window_pattern",
            u(spec.sliding_window_pattern),
        ),
        (
            "gemma3.attention.sliding_window_type",
            u(spec.sliding_window_pattern),
        ),
        ("gemma3.context_length", u(64)),
        ("tokenizer.ggml.model", Value::String("llama".into())),
        ("tokenizer.ggml.pre", Value::String("default".into())),
        (
            "tokenizer.ggml.tokens",
            Value::Array(vocab.iter().map(|t| Value::String(t.0.clone())).collect()),
        ),
        (
            "tokenizer.ggml.scores",
            Value::Array(vocab.iter().map(|t| Value::F32(t.1)).collect()),
        ),
        (
            "tokenizer.ggml.token_type",
            Value::Array(vocab.iter().map(|t| Value::I32(t.2)).collect()),
        ),
        ("tokenizer.ggml.bos_token_id", u(2)),
        ("tokenizer.ggml.eos_token_id", u(1)),
        ("tokenizer.ggml.unknown_token_id", u(3)),
        ("tokenizer.ggml.padding_token_id", u(0)),
        ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
        ("tokenizer.ggml.add_space_prefix", Value::Bool(false)),
    ]
}

fn tiny_llama_metadata(spec: &TinySpec) -> Vec<(&'static str, Value)> {
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
    meta
}

const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

/// Writes the same tiny model (F32) as a Hugging Face folder: config.json, model.safetensors and
/// tokenizer.json, with Q and K rows in Hugging Face's (un-permuted) order.
pub fn write_tiny_hf_folder(dir: &Path, spec: &TinySpec) -> Result<()> {
    if spec.architecture != Architecture::Llama {
        return Err(crate::Error::invalid(
            "tiny Hugging Face folders are written for Llama specs only; use write_tiny_gguf for Gemma",
        ));
    }
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
    for (t, l, x) in tiny_tensors(spec)? {
        if spec.skip.contains(&t.gguf_name(l)) {
            continue;
        }
        let x = match t.slot {
            Slot::Wq => unpermute(&x, spec.n_heads)?,
            Slot::Wk => unpermute(&x, spec.n_kv_heads)?,
            _ => x,
        };
        st.insert(t.hf_name(l), x.to_dtype(DType::F32)?.contiguous()?);
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
    tok.as_hf()
        .ok_or_else(|| {
            crate::Error::Tokenizer("the tiny model's tokenizer is not byte-level BPE".into())
        })?
        .save(dir.join("tokenizer.json"), false)?;
    Ok(())
}

/// Reads the GGUF file `src`, lets `edit` change its metadata and tensors, and writes the result
/// to `dst`: for tests that need one thing wrong in an otherwise complete model.
///
/// ```
/// use llm_lab::candle_core::quantized::gguf_file::Value;
/// use llm_lab::testing::{rewrite_gguf, write_tiny_gguf, TinySpec};
/// let dir = tempfile::tempdir().unwrap();
/// let (a, b) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
/// write_tiny_gguf(&a, &TinySpec::default())?;
/// rewrite_gguf(&a, &b, |meta, _| {
///     meta.retain(|(k, _)| k != "llama.block_count");
///     meta.push(("llama.block_count".into(), Value::U32(0)));
/// })?;
/// assert!(llm_lab::Model::load(&b).is_err());
/// # Ok::<(), llm_lab::Error>(())
/// ```
pub fn rewrite_gguf(
    src: &Path,
    dst: &Path,
    edit: impl FnOnce(&mut Vec<(String, Value)>, &mut Vec<(String, QTensor)>),
) -> Result<()> {
    let mut f = std::fs::File::open(src).map_err(|e| crate::Error::io("cannot open", src, e))?;
    let content = gguf_file::Content::read(&mut f)?;
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    let mut tensors = vec![];
    for name in names {
        tensors.push((name.clone(), content.tensor(&mut f, name, &Device::Cpu)?));
    }
    let mut meta: Vec<(String, Value)> = content.metadata.into_iter().collect();
    meta.sort_by(|a, b| a.0.cmp(&b.0));
    edit(&mut meta, &mut tensors);
    let mut out =
        std::fs::File::create(dst).map_err(|e| crate::Error::io("cannot create", dst, e))?;
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut out, &meta_refs, &tensor_refs)?;
    Ok(())
}

/// Raw GGUF bytes written field by field, for files no well-behaved writer produces: huge
/// counts and lengths, nested arrays, impossible dimensions.
///
/// ```
/// use llm_lab::testing::GgufBytes;
/// let mut g = GgufBytes::header(3, 0, 1);
/// g.string("general.alignment").u32(4).u32(0); // type u32, value 0
/// assert_eq!(g.bytes.len(), 4 + 4 + 8 + 8 + 8 + 17 + 4 + 4);
/// ```
#[derive(Debug, Clone, Default)]
pub struct GgufBytes {
    /// The bytes so far.
    pub bytes: Vec<u8>,
}

impl GgufBytes {
    /// Magic, `version`, tensor count and metadata count (8-byte counts, as in v2 and v3).
    pub fn header(version: u32, n_tensors: u64, n_metadata: u64) -> Self {
        let mut g = GgufBytes::default();
        g.bytes.extend_from_slice(b"GGUF");
        g.u32(version).u64(n_tensors).u64(n_metadata);
        g
    }

    /// A little-endian u32.
    pub fn u32(&mut self, x: u32) -> &mut Self {
        self.bytes.extend_from_slice(&x.to_le_bytes());
        self
    }

    /// A little-endian u64.
    pub fn u64(&mut self, x: u64) -> &mut Self {
        self.bytes.extend_from_slice(&x.to_le_bytes());
        self
    }

    /// A GGUF string: 8-byte length, then the bytes.
    pub fn string(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.bytes.extend_from_slice(s.as_bytes());
        self
    }

    /// A metadata key and a u32 value.
    pub fn kv_u32(&mut self, key: &str, x: u32) -> &mut Self {
        self.string(key).u32(4).u32(x)
    }

    /// A metadata key and a string value.
    pub fn kv_string(&mut self, key: &str, s: &str) -> &mut Self {
        self.string(key).u32(8).string(s)
    }

    /// A tensor description: name, dimensions (GGUF order, innermost first), ggml type, offset.
    pub fn tensor_info(&mut self, name: &str, dims: &[u64], dtype: u32, offset: u64) -> &mut Self {
        self.string(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(dtype).u64(offset)
    }

    /// Writes the bytes to `path`, then extends the file to `len` bytes (sparse, reads as zeros)
    /// when `len` is larger.
    pub fn write(&self, path: &Path, len: u64) -> std::io::Result<()> {
        let f = std::fs::File::create(path)?;
        std::io::Write::write_all(&mut &f, &self.bytes)?;
        if len > self.bytes.len() as u64 {
            f.set_len(len)?;
        }
        Ok(())
    }
}
