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

#[test]
fn unknown_model_name_lists_the_known_ones() {
    let e = Model::load_named("gpt-17").unwrap_err().to_string();
    assert!(e.contains("smollm2-135m-instruct"), "{e}");
}
