//! Malformed GGUF files from a seeded generator — truncations, flipped bytes, huge counts and
//! lengths, nested arrays, zero and overflowing dimensions, wrong types, sparse files — through
//! the GGUF reader, the config, the tokenizer and the weights: every one must be an error, never
//! a panic. Bounded in cases and in seconds; the seed is printed with any failing case and can be
//! set with `LLM_LAB_FUZZ_SEED` (cases with `LLM_LAB_FUZZ_CASES`).

use std::path::Path;
use std::time::{Duration, Instant};

use candle_core::quantized::GgmlDType;
use llm_lab::gguf::Gguf;
use llm_lab::sampling::Rng;
use llm_lab::testing::{write_tiny_gguf, GgufBytes, TinySpec};
use llm_lab::tokenizer::Tokenizer;
use llm_lab::{Config, Model};

const DEFAULT_SEED: u64 = 0x0110_5eed;
const DEFAULT_CASES: u64 = 2500;
const TIME_BUDGET: Duration = Duration::from_secs(45);
/// Files larger than this (sparse) only go through the header reader, not the weight loader.
const LOAD_LIMIT: u64 = 64 << 20;

fn below(rng: &mut Rng, n: u64) -> u64 {
    rng.next_u64() % n.max(1)
}

fn pick<T: Copy>(rng: &mut Rng, xs: &[T]) -> T {
    xs[below(rng, xs.len() as u64) as usize]
}

const KEYS: [&str; 14] = [
    "general.architecture",
    "general.alignment",
    "llama.block_count",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.embedding_length",
    "llama.feed_forward_length",
    "llama.rope.dimension_count",
    "llama.context_length",
    "tokenizer.ggml.model",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.eos_token_id",
];

const TENSORS: [&str; 6] = [
    "token_embd.weight",
    "output_norm.weight",
    "blk.0.attn_q.weight",
    "blk.0.attn_norm.weight",
    "rope_freqs.weight",
    "output.weight",
];

const HUGE: [u64; 8] = [
    0,
    1,
    (16 << 20) + 1,
    1 << 31,
    1 << 32,
    1 << 40,
    1 << 62,
    u64::MAX,
];

/// One random metadata value of GGUF type `ty` (13 and above are invalid types).
fn value(rng: &mut Rng, g: &mut GgufBytes, ty: u32, depth: u32, log: &mut String) {
    match ty {
        0 | 1 | 7 => g.bytes.push(pick(rng, &[0, 1, 2, 255])),
        2 | 3 => g
            .bytes
            .extend_from_slice(&(rng.next_u64() as u16).to_le_bytes()),
        4..=6 => {
            let random = rng.next_u64() as u32;
            let x = pick(rng, &[0u32, 1, 2, 3, 4, 16, 32, 64, u32::MAX, random]);
            g.u32(x);
        }
        8 => {
            if below(rng, 6) == 0 {
                let n = pick(rng, &HUGE);
                log.push_str(&format!(" string-len={n}"));
                g.u64(n);
            } else {
                g.string(pick(
                    rng,
                    &["llama", "gpt2", "smollm", "h i", "", "ab", "<|im_end|>"],
                ));
            }
        }
        9 => {
            let elem = if depth < 4 {
                pick(rng, &[0, 4, 5, 8, 8, 9, 13])
            } else {
                8
            };
            let n = if below(rng, 5) == 0 {
                pick(rng, &HUGE)
            } else {
                below(rng, 300)
            };
            log.push_str(&format!(" array<{elem}>[{n}]"));
            g.u32(elem).u64(n);
            // Written elements stay few at depth (300⁴ would be billions).
            for _ in 0..n.min(if depth == 0 { 300 } else { 4 }) {
                value(rng, g, elem, depth + 1, log);
            }
        }
        10..=12 => {
            g.u64(pick(rng, &HUGE));
        }
        _ => {}
    }
}

/// A GGUF file written field by field from random choices.
fn synthesize(rng: &mut Rng, log: &mut String) -> GgufBytes {
    let version = pick(rng, &[3, 3, 3, 2, 1, 0, 4]);
    let n_kv = below(rng, 10);
    let n_tensors = below(rng, 5);
    let (declared_kv, declared_tensors) = if below(rng, 8) == 0 {
        (pick(rng, &HUGE), pick(rng, &HUGE))
    } else {
        (n_kv, n_tensors)
    };
    log.push_str(&format!(
        "synthesized v{version}, {declared_kv} kv ({n_kv} written), {declared_tensors} tensors ({n_tensors} written):"
    ));
    let mut g = GgufBytes::header(version, declared_tensors, declared_kv);
    for _ in 0..n_kv {
        let key = pick(rng, &KEYS);
        let ty = pick(rng, &[4, 4, 8, 8, 9, 9, 0, 5, 6, 7, 10, 12, 13, 200]);
        log.push_str(&format!(" {key}:{ty}"));
        g.string(key).u32(ty);
        value(rng, &mut g, ty, 0, log);
    }
    for _ in 0..n_tensors {
        let name = pick(rng, &TENSORS);
        let n_dims = pick(rng, &[0u32, 1, 2, 2, 2, 3, 4, 5, 1000]);
        let dims: Vec<u64> = (0..n_dims.min(5))
            .map(|_| pick(rng, &[0, 1, 2, 32, 64, 258, 1 << 32, 1 << 62, u64::MAX]))
            .collect();
        let dtype = pick(rng, &[0u32, 0, 1, 2, 3, 8, 12, 14, 30, 4, 99]);
        let offset = pick(rng, &[0u64, 0, 32, 64, 1 << 40, u64::MAX]);
        log.push_str(&format!(
            " tensor {name} dims={dims:?} dtype={dtype} offset={offset}"
        ));
        g.string(name).u32(n_dims);
        for d in dims {
            g.u64(d);
        }
        g.u32(dtype).u64(offset);
    }
    let pad = below(rng, 4096) as usize;
    let fill = below(rng, 256) as u8;
    g.bytes.resize(g.bytes.len() + pad, fill);
    g
}

/// Where `what` ends in `bytes` (a key or a tensor name of the base file).
fn after(bytes: &[u8], what: &str) -> Option<usize> {
    bytes
        .windows(what.len())
        .position(|w| w == what.as_bytes())
        .map(|i| i + what.len())
}

/// A metadata value of the base file replaced in place, its type kept.
fn mutate_meta(rng: &mut Rng, bytes: &mut [u8], log: &mut String) {
    let key = pick(rng, &KEYS);
    let Some(at) = after(bytes, key) else { return };
    if at + 8 > bytes.len() || bytes[at..at + 4] != 4u32.to_le_bytes() {
        return;
    }
    let v = pick(
        rng,
        &[
            0u32,
            1,
            2,
            3,
            7,
            63,
            64,
            65,
            258,
            1 << 16,
            1 << 31,
            u32::MAX,
        ],
    );
    log.push_str(&format!(" {key}={v}"));
    bytes[at + 4..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// One tensor description of the base file changed: a dimension, the number of dimensions (the
/// header shrinks, so later offsets shift) or the type.
fn mutate_tensor(rng: &mut Rng, bytes: &mut Vec<u8>, log: &mut String) {
    let name = pick(rng, &TENSORS);
    let Some(at) = after(bytes, name) else { return };
    if at + 4 > bytes.len() {
        return;
    }
    let n_dims = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
    let dims_end = at + 4 + 8 * n_dims;
    if n_dims > 4 || dims_end + 12 > bytes.len() {
        return;
    }
    match below(rng, 3) {
        0 if n_dims > 0 => {
            let i = below(rng, n_dims as u64) as usize;
            let d = pick(rng, &[0u64, 1, 3, 31, 33, 1 << 32, 1 << 62, u64::MAX]);
            log.push_str(&format!(" {name}.dim{i}={d}"));
            bytes[at + 4 + 8 * i..at + 12 + 8 * i].copy_from_slice(&d.to_le_bytes());
        }
        1 => {
            let keep = below(rng, n_dims as u64) as usize;
            log.push_str(&format!(" {name}.n_dims={keep}"));
            bytes[at..at + 4].copy_from_slice(&(keep as u32).to_le_bytes());
            bytes.drain(at + 4 + 8 * keep..dims_end);
        }
        _ => {
            let t = pick(rng, &[0u32, 1, 2, 3, 8, 12, 14, 30, 99]);
            log.push_str(&format!(" {name}.dtype={t}"));
            bytes[dims_end..dims_end + 4].copy_from_slice(&t.to_le_bytes());
        }
    }
}

/// One malformed file: its bytes, an optional sparse length, and what was done.
fn malformed(rng: &mut Rng, base: &[u8], header_len: usize) -> (Vec<u8>, u64, String) {
    let mut bytes = base.to_vec();
    let mut log = String::new();
    let rounds = 1 + below(rng, 2);
    for _ in 0..rounds {
        match below(rng, 10) {
            0 => {
                let keep = below(rng, bytes.len() as u64) as usize;
                log.push_str(&format!(" truncate@{keep}"));
                bytes.truncate(keep);
            }
            1 => {
                for _ in 0..1 + below(rng, 8) {
                    let at = below(rng, header_len as u64) as usize;
                    if at < bytes.len() {
                        let x = 1 + below(rng, 255) as u8;
                        log.push_str(&format!(" xor@{at}^{x}"));
                        bytes[at] ^= x;
                    }
                }
            }
            2 => {
                let at = below(rng, header_len as u64) as usize;
                let v = pick(rng, &HUGE);
                if at + 8 <= bytes.len() {
                    log.push_str(&format!(" u64@{at}={v}"));
                    bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
                }
            }
            3 => {
                let at = below(rng, header_len as u64) as usize;
                let v = pick(rng, &[0u32, 1, 2, 3, 4, 5, 8, 9, 12, 13, 30, 99, u32::MAX]);
                if at + 4 <= bytes.len() {
                    log.push_str(&format!(" u32@{at}={v}"));
                    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
                }
            }
            4 | 5 => {
                let g = synthesize(rng, &mut log);
                bytes = g.bytes;
            }
            6 | 7 => mutate_meta(rng, &mut bytes, &mut log),
            8 => mutate_tensor(rng, &mut bytes, &mut log),
            _ => {
                // Header intact, data cut: the file is extended again with holes.
                let keep = header_len + below(rng, (bytes.len() - header_len) as u64) as usize;
                bytes.truncate(keep);
                let len = pick(rng, &[bytes.len() as u64 + 1, base.len() as u64, 1 << 30]);
                log.push_str(&format!(" sparse:{keep}->{len}"));
                return (bytes, len, log);
            }
        }
    }
    (bytes, 0, log)
}

/// Every way the library reads a GGUF file; only errors may come out.
fn read_everything(path: &Path, len: u64) -> Vec<String> {
    let mut errors = vec![];
    match Gguf::open(path) {
        Err(e) => errors.push(e.to_string()),
        Ok(mut g) => {
            match Config::from_gguf(&mut g) {
                Err(e) => errors.push(e.to_string()),
                Ok(c) => assert!(c.validate(path).is_ok()),
            }
            match Tokenizer::from_gguf(&g) {
                Err(e) => errors.push(e.to_string()),
                Ok(t) => {
                    for text in ["hi", "Certa vez, ele resolveu 123", "<|im_end|>ü"] {
                        if let Err(e) = t.encode(text) {
                            errors.push(e.to_string());
                        }
                    }
                }
            }
            if len <= LOAD_LIMIT {
                match Model::load(path) {
                    Err(e) => errors.push(e.to_string()),
                    Ok(m) => {
                        let _ = m.encode("hi").and_then(|ids| m.run(&ids));
                    }
                }
            }
        }
    }
    errors
}

#[test]
fn malformed_gguf_files_give_errors_never_panics() {
    let seed = std::env::var("LLM_LAB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    let cases = std::env::var("LLM_LAB_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let dir = tempfile::tempdir().unwrap();
    let base_path = dir.path().join("base.gguf");
    let spec = TinySpec {
        n_layers: 1,
        n_heads: 2,
        n_kv_heads: 1,
        d_model: 32,
        d_mlp: 32,
        format: GgmlDType::Q8_0,
        ..Default::default()
    };
    write_tiny_gguf(&base_path, &spec).unwrap();
    let base = std::fs::read(&base_path).unwrap();
    let header_len = {
        let f = std::io::BufReader::new(std::fs::File::open(&base_path).unwrap());
        llm_lab::gguf::scan::scan(f, base.len() as u64)
            .unwrap()
            .tensor_data_offset as usize
    };
    std::fs::remove_file(&base_path).unwrap();
    let path = dir.path().join("case.gguf");
    let start = Instant::now();
    let mut rng = Rng::new(seed);
    let (mut ran, mut loaded) = (0u64, 0u64);
    for case in 0..cases {
        if start.elapsed() > TIME_BUDGET {
            break;
        }
        let (bytes, len, log) = malformed(&mut rng, &base, header_len);
        let f = std::fs::File::create(&path).unwrap();
        std::io::Write::write_all(&mut &f, &bytes).unwrap();
        if len > bytes.len() as u64 {
            f.set_len(len).unwrap();
        }
        drop(f);
        let file_len = std::fs::metadata(&path).unwrap().len();
        let t0 = Instant::now();
        let outcome = std::panic::catch_unwind(|| read_everything(&path, file_len));
        if t0.elapsed() > Duration::from_secs(1) {
            eprintln!(
                "slow case {case} ({:.1} s, {file_len} bytes):{log}",
                t0.elapsed().as_secs_f64()
            );
        }
        match outcome {
            Err(_) => panic!(
                "seed {seed}, case {case}: panicked on a malformed file ({} bytes, {file_len} long):{log}",
                bytes.len()
            ),
            Ok(errors) => {
                if errors.is_empty() {
                    loaded += 1;
                }
                for e in errors {
                    assert!(
                        e.len() > 20 && !e.contains("panicked"),
                        "seed {seed}, case {case}: unclear error {e:?}:{log}"
                    );
                }
            }
        }
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(
            left.len(),
            1,
            "seed {seed}, case {case}: files left behind:{log}"
        );
        ran += 1;
    }
    println!(
        "seed {seed}: {ran} malformed files in {:.1} s, {loaded} still loaded completely",
        start.elapsed().as_secs_f64()
    );
    assert!(ran >= 100, "only {ran} cases ran within the time budget");
}
