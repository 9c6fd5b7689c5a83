//! The `llm-lab` binary (what `cargo xtask fetch|inspect|tokenize|generate|bench` run) on the
//! real default model.

use std::process::Command;

fn llm_lab(args: &[&str]) -> (String, String, bool) {
    let (out, err, code) = llm_lab_code(args);
    (out, err, code == Some(0))
}

fn llm_lab_code(args: &[&str]) -> (String, String, Option<i32>) {
    let out = Command::new(env!("CARGO_BIN_EXE_llm-lab"))
        .args(args)
        .env("CANDLE_NUM_THREADS", "1")
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.code(),
    )
}

#[test]
fn inspect_reads_layers_and_heads() {
    let (out, err, ok) = llm_lab(&["inspect"]);
    assert!(ok, "{err}");
    for line in ["layers: 30", "heads: 9", "kv heads: 3"] {
        assert!(out.lines().any(|l| l == line), "missing {line:?} in\n{out}");
    }
    assert!(out.contains("(layers): 30 × LlamaDecoderLayer("));
}

#[test]
fn tokenize_prints_json_ids_last() {
    let (out, err, ok) = llm_lab(&[
        "tokenize",
        "--text",
        "Certa vez, ele resolveu que não seria",
    ]);
    assert!(ok, "{err}");
    let last = out.lines().last().unwrap();
    let ids: Vec<u32> = serde_json::from_str(last).unwrap();
    assert_eq!(
        ids,
        [36134, 81, 1590, 106, 28, 1427, 10575, 101, 10168, 304, 17031, 1236, 542]
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), "Certa vez").unwrap();
    let (out, _, ok) = llm_lab(&["tokenize", "--file", file.path().to_str().unwrap()]);
    assert!(ok);
    assert_eq!(out.lines().last().unwrap(), "[36134,81,1590,106]");
    let (_, err, ok) = llm_lab(&["tokenize"]);
    assert!(!ok && err.contains("--text"), "{err}");
    // The model by name or by path, as for inspect, generate and bench.
    let (out, err, ok) = llm_lab(&["inspect", "--model", "smollm2-135m-instruct"]);
    assert!(ok, "{err}");
    let source = out
        .lines()
        .find_map(|l| l.strip_prefix("source: "))
        .unwrap()
        .to_string();
    let (out, err, ok) = llm_lab(&["tokenize", "--model", &source, "--text", "Certa vez"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().last().unwrap(), "[36134,81,1590,106]");
}

#[test]
fn generate_with_a_seed_repeats_and_bad_values_are_refused() {
    let args = [
        "generate",
        "--prompt",
        "Once upon a time",
        "--max-new-tokens",
        "12",
        "--temperature",
        "0.9",
        "--top-p",
        "0.9",
        "--seed",
        "7",
    ];
    let (a, err, ok) = llm_lab(&args);
    assert!(ok, "{err}");
    let (b, _, _) = llm_lab(&args);
    assert_eq!(a, b);
    assert!(
        a.starts_with("Once upon a time") && a.len() > "Once upon a time".len() + 5,
        "{a}"
    );
    let (_, err, ok) = llm_lab(&["generate", "--prompt", "x", "--top-p", "1.5"]);
    assert!(!ok && err.contains("top_p must be in (0, 1]"), "{err}");
    let (_, err, ok) = llm_lab(&["generate", "--prompt", "x", "--temperature", "-1"]);
    assert!(!ok && err.contains("temperature"), "{err}");
}

#[test]
fn bench_reports_all_engines_as_json() {
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench.json");
    // A stand-in for llama.cpp's llama-bench: its JSON shape, fixed numbers.
    let fake = dir.path().join("llama-bench");
    std::fs::write(
        &fake,
        "#!/bin/sh\necho '[{\"n_prompt\": 8, \"n_gen\": 0, \"avg_ts\": 100.0}, {\"n_prompt\": 0, \"n_gen\": 2, \"avg_ts\": 50.0}]'\n",
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let (out, err, ok) = llm_lab(&[
        "bench",
        "--prompt-tokens",
        "8",
        "--gen-tokens",
        "2",
        "--repeats",
        "1",
        "--rounds",
        "1",
        "--llama-bench",
        fake.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("glass-box / candle"), "{out}");
    assert!(out.contains("glass-box / llama.cpp"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let engines = v["engines"].as_array().unwrap();
    assert_eq!(engines.len(), 4);
    // Peak memory comes from /proc: Linux only (elsewhere the bench prints "-").
    let measures_memory = cfg!(target_os = "linux");
    for e in engines {
        assert!(
            e["prompt_tok_s"].as_f64().unwrap() > 0.0 && e["gen_tok_s"].as_f64().unwrap() > 0.0,
            "{e}"
        );
        if measures_memory {
            assert!(e["peak_rss_mb"].as_f64().unwrap() > 0.0, "{e}");
        }
    }
    assert_eq!(engines[3]["gen_tok_s"].as_f64(), Some(50.0));
    for key in [
        "prompt",
        "generation",
        "traced_prompt",
        "traced_generation",
        "llama_cpp_prompt",
        "llama_cpp_generation",
    ] {
        assert!(v["ratios"][key].as_f64().unwrap() > 0.0, "{key}");
    }
    // The model holds its weights once: peak memory stays near the file's size.
    if measures_memory {
        let ratio = v["ratios"]["memory_over_file"].as_f64().unwrap();
        assert!(ratio > 0.0 && ratio < 1.5, "{v}");
    }
}

/// The JAX peer `cargo xtask bench-train` installs (`.venv-jax`), or `LLM_LAB_JAX_PYTHON`.
fn jax_python() -> Option<std::path::PathBuf> {
    if let Some(p) = std::env::var_os("LLM_LAB_JAX_PYTHON") {
        return Some(p.into());
    }
    let venv = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv-jax/bin/python");
    if venv.exists() {
        return Some(venv);
    }
    llm_lab::testing::missing(
        "bench_train_follows_its_peer_step_for_step",
        "the JAX peer: run `cargo xtask bench-train` once (or set LLM_LAB_JAX_PYTHON)",
    );
    None
}

/// The course's loop and JAX train the same model from the same weights on the same batches:
/// their losses agree step for step (here the first, the last and the validation loss), which
/// checks the forward pass, the gradients and AdamW against an independent implementation.
#[test]
fn bench_train_follows_its_peer_step_for_step() {
    let Some(python) = jax_python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("bench-train.json");
    let notebooks = concat!(env!("CARGO_MANIFEST_DIR"), "/../../notebooks");
    let (out, err, ok) = llm_lab(&[
        "bench-train",
        "--corpus",
        notebooks,
        "--steps",
        "12",
        "--layers",
        "2",
        "--d-model",
        "32",
        "--vocab",
        "320",
        "--window",
        "16",
        "--batch",
        "4",
        "--python",
        python.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("llm-lab / JAX"), "{out}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let engines = v["engines"].as_array().unwrap();
    assert_eq!(engines.len(), 2);
    let (ours, peer) = (&engines[0], &engines[1]);
    for key in ["first_loss", "last_loss", "valid_loss"] {
        let (a, b) = (ours[key].as_f64().unwrap(), peer[key].as_f64().unwrap());
        // Equal to f32 rounding (a few 1e-7 measured); a RoPE pairing that differs shows
        // as about 1e-4 after these steps.
        assert!((a - b).abs() < 1e-5, "{key}: llm-lab {a}, JAX {b}");
    }
    // Training moved the weights: the last loss is not the first.
    let first = ours["first_loss"].as_f64().unwrap();
    assert!(ours["last_loss"].as_f64().unwrap() < first - 0.01, "{ours}");
    assert!(ours["tokens_per_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn bench_train_refuses_a_missing_corpus_and_a_peer_that_fails() {
    let (_, err, ok) = llm_lab(&[
        "bench-train",
        "--corpus",
        "/no/such/file.txt",
        "--steps",
        "2",
    ]);
    assert!(!ok && err.contains("/no/such/file.txt"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("c.txt");
    std::fs::write(
        &corpus,
        "o gato subiu no telhado e desceu do telhado. ".repeat(40),
    )
    .unwrap();
    let (_, err, ok) = llm_lab(&[
        "bench-train",
        "--corpus",
        corpus.to_str().unwrap(),
        "--steps",
        "2",
        "--layers",
        "1",
        "--d-model",
        "16",
        "--vocab",
        "270",
        "--window",
        "8",
        "--batch",
        "2",
        "--python",
        "/bin/false",
    ]);
    assert!(!ok && err.contains("JAX peer failed"), "{err}");
}
