//! Reading GGUF files (llama.cpp's format) defensively, for the model and the tokenizer alike: a truncated download or a corrupt header
//! becomes an error that says what to do, never a panic or a multi-gigabyte allocation.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file::{Content, Value};
use candle_core::quantized::QTensor;
use candle_core::Device;

use crate::error::{Error, Result};

pub mod scan;
pub(crate) mod silent_panic;

/// An opened, validated GGUF file: metadata in memory, tensors read on demand.
pub struct Gguf {
    pub path: PathBuf,
    pub content: Content,
    reader: BufReader<File>,
}

const GGUF_MAGIC: &[u8; 4] = b"GGUF";

impl Gguf {
    /// Opens `path` and checks its header and every tensor's extent against the file's size.
    ///
    /// Only a regular file is opened (a FIFO would block, a folder is not a GGUF). The header is
    /// walked once before it is read into memory and refused past the limits in [`scan`]: no
    /// file, however crafted, makes this allocate more than those limits.
    pub fn open(path: &Path) -> Result<Self> {
        let redo = "; run `cargo xtask fetch` again or download the file again";
        ensure_regular_file(path)?;
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
        let header = scan::scan(&mut reader, len)
            .map_err(|p| Error::model_file(path, format!("{p}{redo}")))?;
        reader
            .rewind()
            .map_err(|e| Error::io("cannot read", path, e))?;
        // The walk above leaves candle nothing known to panic on; should it still, say so plainly.
        let content = silent_panic::catch_silently(|| Content::read(&mut reader))
            .map_err(|_| Error::model_file(path, format!("has a corrupt GGUF header{redo}")))?
            .map_err(|e| {
                Error::model_file(path, format!("has an unreadable GGUF header ({e}){redo}"))
            })?;
        if content.tensor_data_offset != header.tensor_data_offset {
            return Err(Error::model_file(
                path,
                format!("has a GGUF header that candle and llm-lab read differently (tensor data at {} or {}){redo}", content.tensor_data_offset, header.tensor_data_offset),
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

    /// The stored bytes of tensor `name`, read in pieces of at most `chunk` bytes (whole blocks),
    /// each handed to `sink`: a large quantized matrix goes straight into its final layout,
    /// without the whole tensor being held twice. The extent was checked at open.
    pub fn read_raw(
        &mut self,
        name: &str,
        chunk: usize,
        mut sink: impl FnMut(&[u8]),
    ) -> Result<()> {
        use std::io::{Read, Seek, SeekFrom};
        let info = self.content.tensor_infos.get(name).ok_or_else(|| {
            Error::model_file(
                &self.path,
                format!("lacks the tensor `{name}`: it is not a complete Llama model; download it again or pick another file"),
            )
        })?;
        let (dtype, elems) = (info.ggml_dtype, info.shape.elem_count());
        let bytes = elems / dtype.block_size() * dtype.type_size();
        let start = self.content.tensor_data_offset + info.offset;
        let piece = (chunk / dtype.type_size()).max(1) * dtype.type_size();
        let unreadable = |e: std::io::Error| {
            Error::model_file(
                &self.path,
                format!("has an unreadable tensor `{name}` ({e}); run `cargo xtask fetch` again or download the file again"),
            )
        };
        self.reader
            .seek(SeekFrom::Start(start))
            .map_err(unreadable)?;
        let mut buf = vec![0u8; piece.min(bytes)];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len());
            self.reader.read_exact(&mut buf[..n]).map_err(unreadable)?;
            sink(&buf[..n]);
            left -= n;
        }
        Ok(())
    }

    /// The metadata value `key`, if present.
    pub fn meta(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    /// An integer metadata value; an error names the key when it is missing.
    pub fn meta_usize(&self, key: &str) -> Result<usize> {
        let v = self.meta(key).ok_or_else(|| {
            Error::model_file(
                &self.path,
                format!("lacks the metadata `{key}`; is it a Llama-family GGUF?"),
            )
        })?;
        value_as_u64(v)
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| {
                Error::model_file(
                    &self.path,
                    format!("has `{key}` = {v:?}; it must be a non-negative integer"),
                )
            })
    }

    /// A float (or integer) metadata value.
    pub fn meta_f32(&self, key: &str) -> Option<f32> {
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

/// Checks that `path` is a regular file before anything opens it: opening a FIFO blocks until a
/// writer comes, and a folder or a device is no model file.
pub(crate) fn ensure_regular_file(path: &Path) -> Result<()> {
    let kind = std::fs::metadata(path)
        .map_err(|e| Error::io("cannot open model file", path, e))?
        .file_type();
    if kind.is_file() {
        return Ok(());
    }
    let what = if kind.is_dir() {
        "a folder"
    } else {
        "not a regular file (a pipe, socket or device)"
    };
    Err(Error::model_file(
        path,
        format!("is {what}; pass the path of a model file (a .gguf file, or a Hugging Face folder to `Model::load`)"),
    ))
}

/// The text of the regular file `path` (see [`ensure_regular_file`]).
pub(crate) fn read_regular_to_string(path: &Path) -> Result<String> {
    ensure_regular_file(path)?;
    std::fs::read_to_string(path).map_err(|e| Error::io("cannot read", path, e))
}

/// An integer metadata value of any width, if it is a non-negative integer.
pub fn value_as_u64(v: &Value) -> Option<u64> {
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
