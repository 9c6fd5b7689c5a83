//! A model written back as a GGUF file that [`Model::load`] opens: what a notebook trains or
//! edits keeps every tool of the course (the module tree, traces, `generate`, the explorer).
//!
//! The file holds the config under the table of GGUF keys (`GgufKeys` in `config.rs`), the
//! tokenizer's `tokenizer.*` metadata, and every tensor of the architecture's table
//! ([`schema`](super::schema)) in f32: a quantized model is written with its dequantized
//! numbers, so it loads back as [`WeightFormat::F32`](super::WeightFormat::F32) would load the
//! original. Llama's Q and K rows are stored in GGUF's interleaved pairing whatever the source.

use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{DType, Tensor};

use super::config::{Architecture, GgufKeys, RopeScaling};
use super::schema::{self, Slot};
use super::weights::{Param, RopeStyle};
use super::Model;
use crate::error::{Error, Result};

impl Model {
    /// Writes the model to `path` as a GGUF file (f32 tensors). The file appears whole or not
    /// at all: it is written beside `path` and renamed into place.
    ///
    /// ```
    /// use llm_lab::testing::{tiny_model, TinySpec};
    /// let (dir, model) = tiny_model(&TinySpec::default())?;
    /// let path = dir.path().join("copy.gguf");
    /// model.save_gguf(&path)?;
    /// let copy = llm_lab::Model::load(&path)?;
    /// let same = |m: &llm_lab::Model| m.run(&[1, 2, 3]).unwrap().to_vec2::<f32>().unwrap();
    /// assert_eq!(same(&model), same(&copy));
    /// # Ok::<(), llm_lab::Error>(())
    /// ```
    pub fn save_gguf(&self, path: impl AsRef<Path>) -> Result<()> {
        let path = path.as_ref();
        let c = &self.config;
        let mut meta = GgufKeys::metadata(c)?;
        meta.push(("general.name".into(), Value::String(c.name.clone())));
        let mut tokenizer = self.tokenizer.gguf_metadata()?;
        // The config's special tokens are the ones the model uses: they win over the source's.
        tokenizer.retain(|(k, _)| {
            !matches!(
                k.as_str(),
                "tokenizer.ggml.bos_token_id"
                    | "tokenizer.ggml.eos_token_id"
                    | "tokenizer.ggml.eot_token_id"
                    | "tokenizer.ggml.eom_token_id"
                    | "tokenizer.ggml.add_bos_token"
                    | "tokenizer.chat_template"
            )
        });
        meta.extend(tokenizer);
        if let Some(bos) = c.bos_token_id {
            meta.push(("tokenizer.ggml.bos_token_id".into(), Value::U32(bos)));
        }
        if let Some(&eos) = c.eos_token_ids.first() {
            meta.push(("tokenizer.ggml.eos_token_id".into(), Value::U32(eos)));
        }
        for (key, id) in ["eot", "eom"].iter().zip(c.eos_token_ids.iter().skip(1)) {
            meta.push((format!("tokenizer.ggml.{key}_token_id"), Value::U32(*id)));
        }
        meta.push((
            "tokenizer.ggml.add_bos_token".into(),
            Value::Bool(c.add_bos_token),
        ));
        if let Some(t) = &c.chat_template {
            meta.push(("tokenizer.chat_template".into(), Value::String(t.clone())));
        }

        let mut tensors: Vec<(String, QTensor)> = Vec::new();
        for (t, l) in schema::instances(c) {
            let Some(p) = self.weights.param(t.slot, l) else {
                return Err(Error::invalid(format!(
                    "the model holds no `{}`",
                    t.gguf_name(l)
                )));
            };
            let x = match p {
                Param::Matrix(m) => m.weight()?,
                Param::Gain(g) => g.to_dtype(DType::F32)?,
            };
            let x = match (c.architecture, self.weights.rope_style, t.slot) {
                (Architecture::Llama, RopeStyle::HalfSplit, Slot::Wq) => {
                    interleave(&x, c.n_heads, c.d_head)?
                }
                (Architecture::Llama, RopeStyle::HalfSplit, Slot::Wk) => {
                    interleave(&x, c.n_kv_heads, c.d_head)?
                }
                _ => x,
            };
            tensors.push((t.gguf_name(l), QTensor::quantize(&x, GgmlDType::F32)?));
        }
        if let Some(factors) = rope_factors(c)? {
            tensors.push((
                "rope_freqs.weight".into(),
                QTensor::quantize(&factors, GgmlDType::F32)?,
            ));
        }

        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let dir = dir.unwrap_or(Path::new("."));
        let tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| Error::io("cannot create a file in", dir, e))?;
        let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let tensor_refs: Vec<(&str, &QTensor)> =
            tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        let mut file = std::io::BufWriter::new(tmp.as_file());
        gguf_file::write(&mut file, &meta_refs, &tensor_refs)?;
        std::io::Write::flush(&mut file).map_err(|e| Error::io("cannot write", path, e))?;
        drop(file);
        tmp.persist(path)
            .map_err(|e| Error::io("cannot write", path, e.error))?;
        Ok(())
    }
}

/// Hugging Face's Q/K rows `[heads · (member j, pair i), in]` in GGUF's order
/// `[heads · (pair i, member j), in]`, which the interleaved rotation reads.
fn interleave(x: &Tensor, heads: usize, d_head: usize) -> Result<Tensor> {
    let (rows, cols) = x.dims2()?;
    Ok(x.reshape((heads, 2, d_head / 2, cols))?
        .transpose(1, 2)?
        .contiguous()?
        .reshape((rows, cols))?)
}

/// Llama 3's long-context scaling as GGUF stores it: one divisor per frequency
/// (`rope_freqs.weight`), the unscaled frequency over the scaled one.
fn rope_factors(c: &super::Config) -> Result<Option<Tensor>> {
    let factors: Vec<f32> = match &c.rope_scaling {
        None => return Ok(None),
        Some(RopeScaling::FrequencyFactors(f)) => f.clone(),
        Some(RopeScaling::Llama3 { .. }) => {
            let plain = super::Config {
                rope_scaling: None,
                ..c.clone()
            };
            plain
                .rope_inv_freqs()
                .iter()
                .zip(c.rope_inv_freqs())
                .map(|(base, scaled)| base / scaled)
                .collect()
        }
    };
    let n = factors.len();
    Ok(Some(Tensor::from_vec(
        factors,
        n,
        &candle_core::Device::Cpu,
    )?))
}
