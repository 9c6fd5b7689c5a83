//! A streaming walk over a GGUF header that allocates nothing in proportion to the file, run
//! before candle materialises the metadata: candle keeps every array element as a 32-byte
//! `Value`, so a 64 MiB array costs 2 GB and a small sparse file can ask for tens of gigabytes.
//! The walk refuses such files with a message that names the key and the limit.

use std::collections::HashSet;
use std::io::{BufRead, Read};

/// The most elements one metadata array may hold (Gemma 3's vocabulary has 262,144).
pub const MAX_ARRAY_ELEMENTS: u64 = 16 << 20;
/// The longest metadata string, in bytes (chat templates are a few kilobytes).
pub const MAX_STRING_BYTES: u64 = 16 << 20;
/// What the whole metadata section may cost in memory once read, in bytes.
pub const MAX_METADATA_MEMORY: u64 = 256 << 20;
/// Arrays of arrays are allowed this deep (llama.cpp writes none).
pub const MAX_ARRAY_DEPTH: usize = 2;
/// The most tensors a file may declare (a 405B Llama has about 1,100).
pub const MAX_TENSORS: u64 = 1 << 16;
/// The most metadata entries a file may declare.
pub const MAX_METADATA_ENTRIES: u64 = 1 << 16;
/// The longest tensor name (llama.cpp's own limit is 63 bytes).
pub const MAX_TENSOR_NAME: u64 = 256;
/// A tensor has at most this many dimensions (ggml's `GGML_MAX_DIMS`).
pub const MAX_DIMS: u32 = 4;

const STRING: u32 = 8;
const ARRAY: u32 = 9;

/// What the walk learnt about the header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Where tensor data starts, after the alignment padding.
    pub tensor_data_offset: u64,
    /// Estimated memory the metadata takes once read, in bytes.
    pub metadata_memory: u64,
}

/// Bytes of one value of a fixed-size GGUF type; `None` for strings, arrays and unknown types.
fn fixed_size(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// One read position with the file's length, so that every length can be checked against what
/// is left before anything is skipped or allocated.
struct Walker<R> {
    r: R,
    pos: u64,
    len: u64,
    /// Length prefix size: 4 bytes in GGUF v1, 8 after.
    wide: bool,
    memory: u64,
    value_size: u64,
}

impl<R: BufRead> Walker<R> {
    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.r
            .read_exact(&mut b)
            .map_err(|_| format!("is truncated inside {what}"))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self, what: &str) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.bytes(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.bytes(what)?))
    }

    fn length(&mut self, what: &str) -> Result<u64, String> {
        if self.wide {
            self.u64(what)
        } else {
            self.u32(what).map(u64::from)
        }
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    /// Skips `n` bytes the caller has already checked against [`Self::remaining`].
    fn skip(&mut self, n: u64, what: &str) -> Result<(), String> {
        let copied = std::io::copy(&mut (&mut self.r).take(n), &mut std::io::sink())
            .map_err(|e| format!("cannot be read inside {what} ({e})"))?;
        if copied != n {
            return Err(format!("is truncated inside {what}"));
        }
        self.pos += n;
        Ok(())
    }

    /// Counts `bytes` against the metadata budget.
    fn spend(&mut self, bytes: u64, what: &str) -> Result<(), String> {
        self.memory = self.memory.saturating_add(bytes);
        if self.memory > MAX_METADATA_MEMORY {
            return Err(format!(
                "has more metadata than llm-lab accepts: {what} brings it past {} MiB in memory; this is not a model llm-lab can run — download it again or pick another file",
                MAX_METADATA_MEMORY >> 20
            ));
        }
        Ok(())
    }

    /// A string's length, checked against the limits and the file; its bytes are left unread.
    fn string_len(&mut self, what: &str, max: u64) -> Result<u64, String> {
        let n = self.length(what)?;
        if n > max {
            return Err(format!(
                "has a string of {n} bytes in {what}; the limit is {max} bytes"
            ));
        }
        if n > self.remaining() {
            return Err(format!(
                "is truncated: {what} declares a string of {n} bytes, but only {} bytes follow",
                self.remaining()
            ));
        }
        Ok(n)
    }

    fn string(&mut self, what: &str, max: u64) -> Result<Vec<u8>, String> {
        let n = self.string_len(what, max)?;
        self.spend(n, what)?;
        let mut v = Vec::new();
        (&mut self.r)
            .take(n)
            .read_to_end(&mut v)
            .map_err(|e| format!("cannot be read inside {what} ({e})"))?;
        if v.len() as u64 != n {
            return Err(format!("is truncated inside {what}"));
        }
        self.pos += n;
        Ok(v)
    }

    /// Walks one value of GGUF type `ty`, returning it when it is a small unsigned integer (for
    /// `general.alignment`).
    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<Option<u64>, String> {
        match ty {
            4 => return self.u32(what).map(|x| Some(u64::from(x))),
            STRING => {
                let n = self.string_len(what, MAX_STRING_BYTES)?;
                self.spend(n, what)?;
                self.skip(n, what)?;
            }
            ARRAY => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(format!(
                        "nests arrays more than {MAX_ARRAY_DEPTH} deep in {what}"
                    ));
                }
                let elem = self.u32(what)?;
                let n = self.length(what)?;
                if n > MAX_ARRAY_ELEMENTS {
                    return Err(format!(
                        "has an array of {n} elements in {what}; the limit is {MAX_ARRAY_ELEMENTS} elements"
                    ));
                }
                // Twice the value's size: the vector that holds them grows by doubling.
                self.spend(n.saturating_mul(2 * self.value_size), what)?;
                match fixed_size(elem) {
                    Some(size) => {
                        let bytes = n.saturating_mul(size);
                        if bytes > self.remaining() {
                            return Err(format!(
                                "is truncated: {what} declares {n} elements ({bytes} bytes), but only {} bytes follow",
                                self.remaining()
                            ));
                        }
                        self.skip(bytes, what)?;
                    }
                    None if elem == STRING || elem == ARRAY => {
                        for _ in 0..n {
                            self.value(elem, what, depth + 1)?;
                        }
                    }
                    None => return Err(format!("has an unknown value type {elem} in {what}")),
                }
            }
            _ => {
                let size = fixed_size(ty)
                    .ok_or_else(|| format!("has an unknown value type {ty} in {what}"))?;
                self.skip(size, what)?
            }
        }
        Ok(None)
    }
}

/// Walks the header of the GGUF file in `r` (positioned at its start; `len` bytes long): version,
/// counts, every metadata entry and every tensor's name and dimensions. The error is the problem,
/// phrased to follow "model file `…`".
///
/// ```
/// use llm_lab::gguf::scan::scan;
/// use llm_lab::testing::GgufBytes;
/// let mut g = GgufBytes::header(3, 0, 1);
/// g.string("huge").u32(9).u32(0).u64(1 << 40); // declares an array of 2^40 bytes
/// let e = scan(&g.bytes[..], 1 << 41).unwrap_err(); // as if the file were that long (sparse)
/// assert!(e.contains("array of 1099511627776 elements") && e.contains("limit"), "{e}");
/// ```
pub fn scan<R: BufRead>(r: R, len: u64) -> Result<Header, String> {
    let mut w = Walker {
        r,
        pos: 0,
        len,
        wide: true,
        memory: 0,
        value_size: std::mem::size_of::<candle_core::quantized::gguf_file::Value>() as u64,
    };
    let magic = w.bytes::<4>("the header")?;
    if &magic != b"GGUF" {
        return Err(format!(
            "is not a GGUF file (starts with {magic:?}, expected \"GGUF\")"
        ));
    }
    let version = w.u32("the header")?;
    if !(1..=3).contains(&version) {
        return Err(format!(
            "has GGUF version {version}; llm-lab reads versions 1 to 3"
        ));
    }
    w.wide = version >= 2;
    let n_tensors = w.length("the header")?;
    let n_meta = w.length("the header")?;
    if n_tensors > MAX_TENSORS || n_meta > MAX_METADATA_ENTRIES {
        return Err(format!(
            "has a corrupt GGUF header: it declares {n_tensors} tensors and {n_meta} metadata entries (limits: {MAX_TENSORS} and {MAX_METADATA_ENTRIES})"
        ));
    }
    let mut alignment = None;
    let mut keys = HashSet::new();
    // A map entry: the key's String, the Value and the hash table's own word.
    let entry = 24 + w.value_size + 8;
    for i in 0..n_meta {
        let key = w.string(&format!("the key of metadata entry {i}"), 1 << 16)?;
        let key = String::from_utf8_lossy(&key).into_owned();
        let what = format!("metadata `{key}`");
        if !keys.insert(key.clone()) {
            return Err(format!("has the metadata key `{key}` twice"));
        }
        w.spend(entry, &what)?;
        let ty = w.u32(&what)?;
        let value = w.value(ty, &what, 0)?;
        if key == "general.alignment" {
            // llama.cpp reads it as a u32 and requires a power of two; candle divides by it.
            alignment = Some(value.filter(|_| ty == 4).ok_or_else(|| {
                format!("has `general.alignment` of GGUF type {ty}; it must be a u32 (type 4)")
            })?);
        }
    }
    let alignment = alignment.unwrap_or(32);
    if !alignment.is_power_of_two() {
        return Err(format!(
            "has `general.alignment` = {alignment}; it must be a power of two (32 by default)"
        ));
    }
    let mut names = HashSet::new();
    for i in 0..n_tensors {
        let name = w.string(&format!("the name of tensor {i}"), MAX_TENSOR_NAME)?;
        let name = String::from_utf8_lossy(&name).into_owned();
        let what = format!("tensor `{name}`");
        let n_dims = w.u32(&what)?;
        if n_dims > MAX_DIMS {
            return Err(format!(
                "declares {what} with {n_dims} dimensions; GGUF tensors have at most {MAX_DIMS}"
            ));
        }
        let mut dims = Vec::with_capacity(n_dims as usize);
        for _ in 0..n_dims {
            dims.push(w.length(&what)?);
        }
        if dims
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d))
            .is_none_or(|n| n > i64::MAX as u64)
        {
            return Err(format!(
                "declares {what} with absurd dimensions {dims:?} (their product overflows)"
            ));
        }
        let _dtype = w.u32(&what)?;
        let _offset = w.u64(&what)?;
        w.spend(128 + name.len() as u64, &what)?;
        if !names.insert(name) {
            return Err(format!("declares {what} twice"));
        }
    }
    // A file without tensors (llama.cpp's vocabulary files) may end right after its metadata.
    let tensor_data_offset = w
        .pos
        .div_ceil(alignment)
        .checked_mul(alignment)
        .filter(|&o| o <= len || n_tensors == 0)
        .ok_or_else(|| "is truncated: the header ends past the end of the file".to_string())?;
    Ok(Header {
        tensor_data_offset,
        metadata_memory: w.memory,
    })
}
