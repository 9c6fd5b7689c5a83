//! Every broken file is a clear error that says what to do — never a panic. (Failed fetches:
//! `tests/fetch.rs`.)

use std::path::Path;

use llm_lab::testing::{write_tiny_gguf, TinySpec};
use llm_lab::Model;

fn tiny(dir: &Path) -> std::path::PathBuf {
    let p = dir.join("tiny.gguf");
    write_tiny_gguf(&p, &TinySpec::default()).unwrap();
    p
}

fn load_err(path: &Path) -> String {
    match Model::load(path) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn missing_file() {
    let e = load_err(Path::new("/nonexistent/model.gguf"));
    assert!(e.contains("cannot open model file"), "{e}");
}

#[test]
fn truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny(dir.path());
    let bytes = std::fs::read(&p).unwrap();
    for keep in [10, 200, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&p, &bytes[..keep]).unwrap();
        let e = load_err(&p);
        assert!(
            e.contains("truncated") || e.contains("unreadable GGUF header"),
            "{keep} bytes: {e}"
        );
        assert!(e.contains("cargo xtask fetch"), "{e}");
    }
}

#[test]
fn wrong_magic() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny(dir.path());
    let mut bytes = std::fs::read(&p).unwrap();
    bytes[..4].copy_from_slice(b"PK\x03\x04");
    std::fs::write(&p, &bytes).unwrap();
    let e = load_err(&p);
    assert!(e.contains("is not a GGUF file"), "{e}");
}

#[test]
fn missing_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("t.gguf");
    write_tiny_gguf(
        &p,
        &TinySpec {
            skip: vec!["blk.1.attn_q.weight".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let e = load_err(&p);
    assert!(e.contains("lacks the tensor `blk.1.attn_q.weight`"), "{e}");
}

/// Offsets inside the header of a GGUF v2/v3 file: magic, version, tensor count, kv count.
const TENSOR_COUNT_AT: usize = 8;
const KV_COUNT_AT: usize = 16;

#[test]
fn absurd_counts_in_header() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny(dir.path());
    let good = std::fs::read(&p).unwrap();
    for at in [TENSOR_COUNT_AT, KV_COUNT_AT] {
        let mut bytes = good.clone();
        bytes[at..at + 8].copy_from_slice(&(1u64 << 60).to_le_bytes());
        std::fs::write(&p, &bytes).unwrap();
        let e = load_err(&p);
        assert!(e.contains("GGUF header"), "{e}");
    }
}

#[test]
fn absurd_tensor_dimensions() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny(dir.path());
    let mut bytes = std::fs::read(&p).unwrap();
    // The first tensor info follows the metadata: find its name, then its first dimension.
    let name = b"token_embd.weight";
    let at = bytes.windows(name.len()).position(|w| w == name).unwrap() + name.len() + 4;
    bytes[at..at + 8].copy_from_slice(&(1u64 << 62).to_le_bytes());
    std::fs::write(&p, &bytes).unwrap();
    let e = load_err(&p);
    assert!(
        e.contains("absurd dimensions") || e.contains("truncated") || e.contains("GGUF header"),
        "{e}"
    );
}

#[test]
fn zero_alignment_is_an_error_not_a_panic() {
    // general.alignment = 0 makes candle divide by zero; the loader must contain that.
    use candle_core::quantized::gguf_file::{self, Value};
    use candle_core::quantized::{GgmlDType, QTensor};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.gguf");
    let t = QTensor::quantize(
        &candle_core::Tensor::zeros((2, 32), candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap(),
        GgmlDType::F32,
    )
    .unwrap();
    let mut f = std::fs::File::create(&p).unwrap();
    gguf_file::write(
        &mut f,
        &[("general.alignment", &Value::U32(0))],
        &[("x", &t)],
    )
    .unwrap();
    drop(f);
    let e = load_err(&p);
    assert!(e.contains("`general.alignment` = 0"), "{e}");
}

#[test]
fn not_a_llama() {
    use candle_core::quantized::gguf_file::{self, Value};
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("a.gguf");
    let mut f = std::fs::File::create(&p).unwrap();
    gguf_file::write(
        &mut f,
        &[("general.architecture", &Value::String("bert".into()))],
        &[],
    )
    .unwrap();
    drop(f);
    let e = load_err(&p);
    assert!(e.contains("architecture `bert`"), "{e}");
}

#[test]
fn hugging_face_folder_without_weights() {
    let dir = tempfile::tempdir().unwrap();
    llm_lab::testing::write_tiny_hf_folder(dir.path(), &TinySpec::default()).unwrap();
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("no *.safetensors"), "{e}");
    std::fs::write(dir.path().join("model.safetensors"), b"garbage").unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("not a readable safetensors"), "{e}");
}

// ---- hostile GGUF files (issue 11) --------------------------------------------------------

use candle_core::quantized::gguf_file::Value;
use candle_core::quantized::{GgmlDType, QTensor};
use llm_lab::testing::{rewrite_gguf, GgufBytes};

const CHILD: &str = "LLM_LAB_BAD_INPUT_CHILD";
const MIB: u64 = 1 << 20;

/// The process's peak resident memory in bytes, where /proc tells it.
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs the test `name` again in a child process, so that its peak memory is its own and a
/// panic message it prints can be seen; the child gets `file` and an address-space limit of
/// 4 GiB (where `sh` has `ulimit`), so a loader that tries to allocate tens of gigabytes fails
/// fast instead of taking the machine down. Returns the child's stdout and stderr.
fn run_in_child(name: &str, file: &Path) -> (String, String) {
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("ulimit -v 4194304 2>/dev/null; exec \"$@\"")
        .arg("sh")
        .arg(&exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, file)
        .env("CANDLE_NUM_THREADS", "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "child run of {name} failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    for line in stdout
        .lines()
        .filter_map(|l| l.find("peak RSS").map(|i| &l[i..]))
    {
        println!("{name}: {line}");
    }
    (stdout, stderr)
}

/// In the child: the file the parent prepared.
fn child_file() -> Option<std::path::PathBuf> {
    std::env::var_os(CHILD).map(Into::into)
}

/// In the child: loading `path` fails with an error containing every one of `needles`, while the
/// peak memory stays under 2 × the bytes on disk + 64 MiB, and nothing is written beside it.
fn refused_within_memory(path: &Path, needles: &[&str]) {
    let on_disk = disk_bytes(path);
    let before = dir_entries(path.parent().unwrap());
    let e = load_err(path);
    for n in needles {
        assert!(e.contains(n), "error lacks {n:?}: {e}");
    }
    assert_eq!(dir_entries(path.parent().unwrap()), before);
    if let Some(peak) = peak_rss() {
        let bound = 2 * on_disk + 64 * MIB;
        println!("peak RSS {} MiB, bound {} MiB", peak / MIB, bound / MIB);
        assert!(peak <= bound, "peak RSS {peak} bytes exceeds {bound}");
    }
}

/// Bytes a file really occupies (sparse holes excluded where the OS says so).
fn disk_bytes(path: &Path) -> u64 {
    let m = std::fs::metadata(path).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        m.len().min(m.blocks() * 512)
    }
    #[cfg(not(unix))]
    m.len()
}

fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A file that is a header, one metadata entry written by `entry`, and `pad` zero bytes (sparse).
fn one_entry_file(path: &Path, entry: impl FnOnce(&mut GgufBytes), apparent_len: u64) {
    let mut g = GgufBytes::header(3, 0, 1);
    entry(&mut g);
    g.write(path, apparent_len).unwrap();
}

#[test]
fn metadata_array_of_64_mib_is_refused_within_memory() {
    if let Some(p) = child_file() {
        return refused_within_memory(&p, &["array of 67108864 elements", "limit"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("array.gguf");
    let mut g = GgufBytes::header(3, 0, 1);
    g.string("tokenizer.ggml.scores")
        .u32(9)
        .u32(0)
        .u64(64 * MIB);
    let mut bytes = g.bytes;
    bytes.resize(bytes.len() + (64 * MIB) as usize, 1);
    std::fs::write(&p, &bytes).unwrap();
    drop(bytes);
    run_in_child("metadata_array_of_64_mib_is_refused_within_memory", &p);
}

#[test]
fn sparse_file_declaring_a_1_gib_array_is_refused_within_memory() {
    if let Some(p) = child_file() {
        return refused_within_memory(&p, &["array of 1073741824 elements", "limit"]);
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("sparse.gguf");
    one_entry_file(
        &p,
        |g| {
            g.string("x").u32(9).u32(0).u64(1 << 30);
        },
        (1 << 30) + 4096,
    );
    run_in_child(
        "sparse_file_declaring_a_1_gib_array_is_refused_within_memory",
        &p,
    );
}

#[test]
fn sparse_file_declaring_a_512_mib_string_is_refused_within_memory() {
    if let Some(p) = child_file() {
        return refused_within_memory(
            &p,
            &["string of 536870912 bytes", "`tokenizer.chat_template`"],
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("string.gguf");
    one_entry_file(
        &p,
        |g| {
            g.string("tokenizer.chat_template").u32(8).u64(512 * MIB);
        },
        513 * MIB,
    );
    run_in_child(
        "sparse_file_declaring_a_512_mib_string_is_refused_within_memory",
        &p,
    );
}

#[test]
fn metadata_over_the_total_budget_is_refused_within_memory() {
    if let Some(p) = child_file() {
        return refused_within_memory(&p, &["256 MiB", "`c`"]);
    }
    // Three arrays each under the per-array limit, together over the budget.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("budget.gguf");
    let n = 3 * MIB / 2;
    let mut g = GgufBytes::header(3, 0, 3);
    for key in ["a", "b", "c"] {
        g.string(key).u32(9).u32(0).u64(n);
        g.bytes.resize(g.bytes.len() + n as usize, 0);
    }
    g.write(&p, 0).unwrap();
    run_in_child(
        "metadata_over_the_total_budget_is_refused_within_memory",
        &p,
    );
}

#[test]
fn nested_arrays_are_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nested.gguf");
    // An array of arrays of arrays of u8.
    one_entry_file(
        &p,
        |g| {
            g.string("deep")
                .u32(9)
                .u32(9)
                .u64(1)
                .u32(9)
                .u64(1)
                .u32(0)
                .u64(1);
            g.bytes.push(7);
        },
        0,
    );
    let e = load_err(&p);
    assert!(e.contains("nests arrays") && e.contains("`deep`"), "{e}");
}

#[test]
fn zero_alignment_is_a_clear_error_and_prints_no_panic() {
    if let Some(p) = child_file() {
        let e = load_err(&p);
        assert!(
            e.contains("general.alignment") && e.contains("power of two"),
            "{e}"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("align.gguf");
    let mut g = GgufBytes::header(3, 1, 1);
    g.kv_u32("general.alignment", 0)
        .tensor_info("x", &[4], 0, 0);
    g.bytes.resize(g.bytes.len() + 64, 0);
    g.write(&p, 0).unwrap();
    let (_, stderr) = run_in_child("zero_alignment_is_a_clear_error_and_prints_no_panic", &p);
    assert!(
        !stderr.contains("panicked"),
        "a panic message reached the terminal:\n{stderr}"
    );
}

#[test]
fn alignment_that_is_not_a_power_of_two_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for (value, ty) in [(3u32, 4u32), (48, 4), (32, 5)] {
        let p = dir.path().join(format!("align{value}-{ty}.gguf"));
        let mut g = GgufBytes::header(3, 1, 1);
        g.string("general.alignment").u32(ty).u32(value);
        g.tensor_info("x", &[4], 0, 0);
        g.bytes.resize(g.bytes.len() + 64, 0);
        g.write(&p, 0).unwrap();
        let e = load_err(&p);
        assert!(e.contains("general.alignment"), "{value} (type {ty}): {e}");
    }
}

/// Makes a FIFO at `path`; false where `mkfifo` is missing.
fn mkfifo(path: &Path) -> bool {
    let made = std::process::Command::new("mkfifo").arg(path).status();
    made.is_ok_and(|s| s.success())
}

/// `Model::load(path)` in a thread: its error, or `None` if it loaded; fails if it blocks.
fn load_without_hanging(path: &Path) -> Option<String> {
    let (tx, rx) = std::sync::mpsc::channel();
    let p = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(Model::load(&p).err().map(|e| e.to_string()));
    });
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .unwrap_or_else(|_| panic!("loading {} hangs", path.display()))
}

#[test]
fn a_fifo_or_a_folder_is_an_immediate_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = match llm_lab::gguf::Gguf::open(dir.path()) {
        Ok(_) => panic!("a folder opened as GGUF"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("is a folder"), "{e}");
    let fifo = dir.path().join("model.gguf");
    if !mkfifo(&fifo) {
        llm_lab::testing::missing("the FIFO cases", "mkfifo");
        return;
    }
    let e = load_without_hanging(&fifo).expect("a FIFO loaded as a model");
    assert!(e.contains("not a regular file"), "{e}");
    // Each file of a Hugging Face folder, replaced by a FIFO.
    for name in [
        "config.json",
        "tokenizer.json",
        "model.safetensors",
        "tokenizer_config.json",
    ] {
        let hf = dir.path().join(format!("hf-{name}"));
        llm_lab::testing::write_tiny_hf_folder(&hf, &TinySpec::default()).unwrap();
        std::fs::remove_file(hf.join(name)).unwrap();
        assert!(mkfifo(&hf.join(name)));
        match load_without_hanging(&hf) {
            Some(e) => assert!(e.contains("not a regular file") && e.contains(name), "{e}"),
            // The chat template's file is optional: without it the model still loads.
            None => assert_eq!(name, "tokenizer_config.json"),
        }
    }
}

/// The tiny model with its metadata and tensors edited.
fn tiny_edited(
    dir: &Path,
    spec: &TinySpec,
    edit: impl FnOnce(&mut Vec<(String, Value)>, &mut Vec<(String, QTensor)>),
) -> std::path::PathBuf {
    let src = dir.join("src.gguf");
    write_tiny_gguf(&src, spec).unwrap();
    let p = dir.join("edited.gguf");
    rewrite_gguf(&src, &p, edit).unwrap();
    std::fs::remove_file(&src).unwrap();
    p
}

fn set_meta(meta: &mut Vec<(String, Value)>, key: &str, v: Value) {
    meta.retain(|(k, _)| k != key);
    meta.push((key.into(), v));
}

fn set_tensor(tensors: &mut [(String, QTensor)], name: &str, t: candle_core::Tensor) {
    let slot = tensors.iter_mut().find(|(n, _)| n == name).unwrap();
    slot.1 = QTensor::quantize(&t, GgmlDType::F32).unwrap();
}

#[test]
fn token_embeddings_with_no_dimensions_are_an_error_not_a_panic() {
    // candle writes no 0-dim tensor, so the bytes are edited: `token_embd.weight` loses its two
    // dimensions (16 bytes) and `general.name` grows by 16 bytes, keeping every offset in place.
    let dir = tempfile::tempdir().unwrap();
    let p = tiny(dir.path());
    let mut bytes = std::fs::read(&p).unwrap();
    let find = |b: &[u8], what: &[u8]| b.windows(what.len()).position(|w| w == what).unwrap();
    let at = find(&bytes, b"token_embd.weight") + "token_embd.weight".len();
    assert_eq!(bytes[at..at + 4], 2u32.to_le_bytes());
    bytes[at..at + 4].copy_from_slice(&0u32.to_le_bytes());
    bytes.drain(at + 4..at + 20);
    let name = find(&bytes, b"general.name") + "general.name".len() + 4;
    let len = u64::from_le_bytes(bytes[name..name + 8].try_into().unwrap());
    bytes[name..name + 8].copy_from_slice(&(len + 16).to_le_bytes());
    let end = name + 8 + len as usize;
    bytes.splice(end..end, *b" with 0-dim embd");
    std::fs::write(&p, &bytes).unwrap();
    let e = load_err(&p);
    assert!(e.contains("`token_embd.weight` of shape []"), "{e}");
}

#[test]
fn head_size_that_overflows_is_an_error() {
    // 4 heads × (2^62 + 16) wraps to 64 = d_model in unchecked arithmetic.
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec {
        n_kv_heads: 4,
        ..Default::default()
    };
    let p = tiny_edited(dir.path(), &spec, |m, _| {
        set_meta(m, "llama.rope.dimension_count", Value::U64((1 << 62) + 16));
    });
    let e = load_err(&p);
    assert!(e.contains("head dim 4611686018427387920 × 4 heads"), "{e}");
}

#[test]
fn every_tensor_shape_is_checked_against_the_config_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let zeros = |shape: &[usize]| {
        candle_core::Tensor::zeros(shape, candle_core::DType::F32, &candle_core::Device::Cpu)
            .unwrap()
    };
    let cases: [(&str, &[usize], &str); 3] = [
        ("blk.0.ffn_norm.weight", &[32], "[64]"),
        ("blk.1.attn_q.weight", &[32, 64], "[64, 64]"),
        ("output_norm.weight", &[64, 1], "[64]"),
    ];
    for (name, shape, want) in cases {
        let p = tiny_edited(dir.path(), &TinySpec::default(), |_, t| {
            set_tensor(t, name, zeros(shape))
        });
        let e = load_err(&p);
        assert!(
            e.contains(&format!("`{name}` of shape {shape:?}")) && e.contains(want),
            "{name}: {e}"
        );
    }
}

#[test]
fn hugging_face_tensor_shapes_are_checked_by_name() {
    let dir = tempfile::tempdir().unwrap();
    llm_lab::testing::write_tiny_hf_folder(dir.path(), &TinySpec::default()).unwrap();
    let st = dir.path().join("model.safetensors");
    let mut tensors = candle_core::safetensors::load(&st, &candle_core::Device::Cpu).unwrap();
    let name = "model.layers.1.post_attention_layernorm.weight";
    let short =
        candle_core::Tensor::ones(32, candle_core::DType::F32, &candle_core::Device::Cpu).unwrap();
    tensors.insert(name.into(), short);
    candle_core::safetensors::save(&tensors, &st).unwrap();
    let e = load_err(dir.path());
    assert!(
        e.contains(&format!("`{name}` of shape [32]")) && e.contains("needs [64]"),
        "{e}"
    );
}

#[test]
fn special_token_ids_outside_the_vocabulary_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    for (key, v) in [
        ("tokenizer.ggml.eos_token_id", Value::U32(5000)),
        ("tokenizer.ggml.bos_token_id", Value::U64((1 << 32) + 1)),
    ] {
        let p = tiny_edited(dir.path(), &TinySpec::default(), |m, _| set_meta(m, key, v));
        let e = load_err(&p);
        assert!(e.contains("5000") || e.contains(key), "{key}: {e}");
    }
}

#[test]
fn a_vocabulary_without_some_bytes_refuses_text_it_would_drop() {
    let dir = tempfile::tempdir().unwrap();
    let p = tiny_edited(dir.path(), &TinySpec::default(), |m, _| {
        let vocab: Vec<Value> = llm_lab::testing::tiny_vocab()
            .into_iter()
            .map(|t| match t.as_str() {
                "h" => Value::String("<no h>".into()),
                "i" => Value::String("<no i>".into()),
                _ => Value::String(t),
            })
            .collect();
        set_meta(m, "tokenizer.ggml.tokens", Value::Array(vocab));
    });
    let model = Model::load(&p).unwrap();
    let e = model.encode("hi").unwrap_err().to_string();
    assert!(e.contains("'h'") && e.contains("\"hi\""), "{e}");
    let e = model.encode("oh no").unwrap_err().to_string();
    assert!(e.contains("'h'") && e.contains("byte 1"), "{e}");
    let ids = model.encode("abc").unwrap();
    assert_eq!(model.tokenizer.decode(&ids).unwrap(), "abc");
}

#[test]
fn os_errors_appear_once_in_the_message_chain() {
    let e = Model::load(Path::new("/nonexistent/model.gguf"))
        .err()
        .unwrap();
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        chain.push_str(&format!(": {s}"));
        source = s.source();
    }
    assert_eq!(chain.matches("No such file").count(), 1, "{chain}");
}

#[test]
fn unknown_model_name_lists_the_known_ones() {
    let e = Model::load_named("gpt-17").unwrap_err().to_string();
    assert!(e.contains("smollm2-135m-instruct"), "{e}");
}

#[test]
fn a_file_without_tensors_may_end_right_after_its_metadata() {
    // llama.cpp's vocabulary files (models/ggml-vocab-*.gguf) have no padding after the header.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("vocab.gguf");
    let mut g = GgufBytes::header(3, 0, 1);
    g.kv_string("general.architecture", "llama");
    assert_ne!(g.bytes.len() % 32, 0);
    g.write(&p, 0).unwrap();
    let gguf = llm_lab::gguf::Gguf::open(&p).unwrap();
    assert_eq!(gguf.meta_str("general.architecture"), Some("llama"));
    // With a tensor, the same missing padding is a truncated file.
    let mut g = GgufBytes::header(3, 1, 1);
    g.kv_string("general.architecture", "llama")
        .tensor_info("x", &[1], 0, 0);
    assert_ne!(g.bytes.len() % 32, 0);
    g.write(&p, 0).unwrap();
    let e = load_err(&p);
    assert!(e.contains("truncated"), "{e}");
}

/// The table of GGUF keys (`GgufKeys` in config.rs): a missing required key and a key of the
/// wrong kind are refused by their full name; a non-finite float is not read as a default.
#[test]
fn gguf_keys_missing_or_of_the_wrong_kind_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let spec = TinySpec::default();
    let cases: [(&str, Option<Value>, &str); 5] = [
        (
            "llama.block_count",
            None,
            "lacks the metadata `llama.block_count`",
        ),
        (
            "llama.block_count",
            Some(Value::String("two".into())),
            "`llama.block_count` of the wrong kind",
        ),
        (
            "llama.attention.head_count",
            Some(Value::I32(-4)),
            "`llama.attention.head_count` of the wrong kind",
        ),
        (
            "llama.rope.freq_base",
            Some(Value::F32(f32::NAN)),
            "`llama.rope.freq_base` of the wrong kind",
        ),
        (
            "llama.context_length",
            Some(Value::F32(64.5)),
            "`llama.context_length` of the wrong kind",
        ),
    ];
    for (key, value, want) in cases {
        let p = tiny_edited(dir.path(), &spec, |m, _| match value {
            Some(v) => set_meta(m, key, v),
            None => m.retain(|(k, _)| k != key),
        });
        let e = load_err(&p);
        assert!(e.contains(want), "{key}: {e}");
    }
}

#[test]
fn a_config_json_field_of_the_wrong_kind_is_named() {
    let dir = tempfile::tempdir().unwrap();
    llm_lab::testing::write_tiny_hf_folder(dir.path(), &TinySpec::default()).unwrap();
    let path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    config["hidden_size"] = serde_json::json!("sixty-four");
    std::fs::write(&path, config.to_string()).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("at `hidden_size`"), "{e}");
    config.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(&path, config.to_string()).unwrap();
    let e = load_err(dir.path());
    assert!(e.contains("missing field `hidden_size`"), "{e}");
}
