//! Reading GGUF files (llama.cpp's format) defensively: a truncated download or a corrupt header
//! becomes an error that says what to do, never a panic or a multi-gigabyte allocation.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;

use super::config::{Config, RopeScaling};
use crate::error::{Error, Result};

/// An opened, validated GGUF file: metadata in memory, tensors read on demand.
pub struct Gguf {
    pub path: PathBuf,
    pub content: Content,
    reader: BufReader<File>,
}

const GGUF_MAGIC: &[u8; 4] = b"GGUF";

impl Gguf {
    /// Opens `path` and checks its header and every tensor's extent against the file's size.
    pub fn open(path: &Path) -> Result<Self> {
        let redo = "; run `cargo xtask fetch` again or download the file again";
        let file = File::open(path).map_err(|e| Error::io("cannot open model file", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("cannot stat", path, e))?
            .len();
        let mut magic = [0u8; 4];
        {
            use std::io::Read;
            let mut f = &file;
            if len < 24 || f.read_exact(&mut magic).is_err() {
                return Err(Error::model_file(
                    path,
                    format!("is truncated: only {len} bytes, not even a GGUF header{redo}"),
                ));
            }
        }
        if &magic != GGUF_MAGIC {
            return Err(Error::model_file(
                path,
                format!("is not a GGUF file (starts with {magic:?}, expected \"GGUF\"); pass a .gguf file or a Hugging Face folder"),
            ));
        }
        let mut reader = BufReader::new(file);
        use std::io::Seek;
        reader
            .rewind()
            .map_err(|e| Error::io("cannot read", path, e))?;
        // candle checks most bounds itself; a few corrupt values (a zero alignment, dims whose
        // product overflows) still reach arithmetic that panics, so contain that here.
        let content =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Content::read(&mut reader)))
                .map_err(|_| Error::model_file(path, format!("has a corrupt GGUF header{redo}")))?
                .map_err(|e| {
                    Error::model_file(path, format!("has an unreadable GGUF header ({e}){redo}"))
                })?;
        if content.tensor_data_offset > len {
            return Err(Error::model_file(
                path,
                format!("is truncated: the header ends past the end of the file{redo}"),
            ));
        }
        for (name, info) in &content.tensor_infos {
            let dims = info.shape.dims();
            let elems = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
            let block = info.ggml_dtype.block_size();
            let bytes = elems
                .filter(|e| e % block == 0)
                .and_then(|e| (e / block).checked_mul(info.ggml_dtype.type_size()));
            let Some(bytes) = bytes else {
                return Err(Error::model_file(
                    path,
                    format!("declares tensor `{name}` with absurd dimensions {dims:?}{redo}"),
                ));
            };
            let end = content
                .tensor_data_offset
                .checked_add(info.offset)
                .and_then(|s| s.checked_add(bytes as u64));
            match end {
                Some(end) if end <= len => {}
                _ => {
                    return Err(Error::model_file(
                        path,
                        format!(
                            "is truncated: tensor `{name}` needs {bytes} bytes at offset {}, but the file has {len} bytes{redo}",
                            content.tensor_data_offset.saturating_add(info.offset)
                        ),
                    ))
                }
            }
        }
        Ok(Gguf {
            path: path.to_path_buf(),
            content,
            reader,
        })
    }

    /// Whether the file holds a tensor named `name`.
    pub fn has(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Reads one tensor, in the file's own (possibly quantized) format.
    pub fn tensor(&mut self, name: &str, device: &Device) -> Result<QTensor> {
        if !self.has(name) {
            return Err(Error::model_file(
                &self.path,
                format!("lacks the tensor `{name}`: it is not a complete Llama model; download it again or pick another file"),
            ));
        }
        self.content
            .tensor(&mut self.reader, name, device)
            .map_err(|e| {
                Error::model_file(
                    &self.path,
                    format!("has an unreadable tensor `{name}` ({e})"),
                )
            })
    }

    /// The metadata value `key`, if present.
    pub fn meta(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn meta_usize(&self, key: &str) -> Result<usize> {
        let v = self.meta(key).ok_or_else(|| {
            Error::model_file(
                &self.path,
                format!("lacks the metadata `{key}`; is it a Llama-family GGUF?"),
            )
        })?;
        value_as_u64(v)
            .map(|x| x as usize)
            .ok_or_else(|| Error::model_file(&self.path, format!("has a non-integer `{key}`")))
    }

    fn meta_f32(&self, key: &str) -> Option<f32> {
        match self.meta(key)? {
            Value::F32(x) => Some(*x),
            Value::F64(x) => Some(*x as f32),
            v => value_as_u64(v).map(|x| x as f32),
        }
    }

    /// A string metadata value.
    pub fn meta_str(&self, key: &str) -> Option<&str> {
        match self.meta(key)? {
            Value::String(s) => Some(s.as_str()),
            _ => None,
        }
    }

    /// The model's configuration, from `{arch}.*` and `tokenizer.ggml.*` metadata.
    pub fn config(&mut self) -> Result<Config> {
        let arch = self
            .meta_str("general.architecture")
            .unwrap_or("")
            .to_string();
        if arch != "llama" {
            return Err(Error::model_file(
                &self.path,
                format!(
                    "has architecture `{arch}`; llm-lab runs Llama-family models (`llama`) only"
                ),
            ));
        }
        let k = |s: &str| format!("{arch}.{s}");
        let n_heads = self.meta_usize(&k("attention.head_count"))?;
        let d_model = self.meta_usize(&k("embedding_length"))?;
        let d_head = self
            .meta_usize(&k("rope.dimension_count"))
            .unwrap_or(d_model / n_heads.max(1));
        let d_vocab = match self.content.tensor_infos.get("token_embd.weight") {
            Some(info) => info.shape.dims()[0],
            None => self.meta_usize(&k("vocab_size"))?,
        };
        let rope_scaling = if self.has("rope_freqs.weight") {
            let t = self
                .tensor("rope_freqs.weight", &Device::Cpu)?
                .dequantize(&Device::Cpu)?;
            Some(RopeScaling::FrequencyFactors(
                t.flatten_all()?.to_vec1::<f32>()?,
            ))
        } else {
            None
        };
        let id = |key: &str| self.meta(key).and_then(value_as_u64).map(|x| x as u32);
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
            name: self
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .or_else(|| self.meta_str("general.name").map(str::to_string))
                .unwrap_or_else(|| "GGUF model".into()),
            architecture: arch.clone(),
            n_layers: self.meta_usize(&k("block_count"))?,
            n_heads,
            n_kv_heads: self
                .meta_usize(&k("attention.head_count_kv"))
                .unwrap_or(n_heads),
            d_head,
            d_model,
            d_mlp: self.meta_usize(&k("feed_forward_length"))?,
            d_vocab,
            n_ctx: self.meta_usize(&k("context_length")).unwrap_or(2048),
            rope_theta: self.meta_f32(&k("rope.freq_base")).unwrap_or(10_000.0),
            rope_scaling,
            rms_norm_eps: self
                .meta_f32(&k("attention.layer_norm_rms_epsilon"))
                .unwrap_or(1e-5) as f64,
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            eos_token_ids,
            add_bos_token: matches!(
                self.meta("tokenizer.ggml.add_bos_token"),
                Some(Value::Bool(true))
            ),
            tied_embeddings: !self.has("output.weight"),
            chat_template: self.meta_str("tokenizer.chat_template").map(str::to_string),
        };
        config.validate(&self.path)?;
        Ok(config)
    }

    /// A string-array metadata value (`tokenizer.ggml.tokens`, `merges`).
    pub fn meta_strings(&self, key: &str) -> Option<Vec<&str>> {
        match self.meta(key)? {
            Value::Array(a) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Some(s.as_str()),
                    _ => None,
                })
                .collect(),
            _ => None,
        }
    }

    /// An integer-array metadata value (`tokenizer.ggml.token_type`).
    pub fn meta_ints(&self, key: &str) -> Option<Vec<i64>> {
        match self.meta(key)? {
            Value::Array(a) => a
                .iter()
                .map(|v| value_as_u64(v).map(|x| x as i64))
                .collect(),
            _ => None,
        }
    }
}

fn value_as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::U8(x) => Some(*x as u64),
        Value::U16(x) => Some(*x as u64),
        Value::U32(x) => Some(*x as u64),
        Value::U64(x) => Some(*x),
        Value::I8(x) => u64::try_from(*x).ok(),
        Value::I16(x) => u64::try_from(*x).ok(),
        Value::I32(x) => u64::try_from(*x).ok(),
        Value::I64(x) => u64::try_from(*x).ok(),
        _ => None,
    }
}
