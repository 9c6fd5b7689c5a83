//! `cargo xtask`'s command line as a user runs it: options checked before anything runs, and the
//! model commands handed to the `llm-lab` binary.

use std::process::Command;

fn xtask_code(args: &[&str]) -> (String, String, Option<i32>) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
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
fn misspelt_options_fail_with_the_known_ones() {
    for (args, wrong, known) in [
        (
            &["generate", "--prompt", "x", "--temprature", "5"][..],
            "--temprature",
            &["--temperature <T>", "--top-k <K>", "--model <NAME|PATH>"][..],
        ),
        (
            &["generate", "--prompt", "x", "--top_k", "1"],
            "--top_k",
            &["--top-k <K>", "--seed <S>"],
        ),
        (
            &["inspect", "--modle", "x"],
            "--modle",
            &["--model <NAME|PATH>"],
        ),
        (
            &["check", "--timout", "5"],
            "--timout",
            &["--timeout <SECS>"],
        ),
        (
            &["lab", "--no-browse"],
            "--no-browse",
            &["--port <N>", "--no-browser"],
        ),
    ] {
        let (out, err, code) = xtask_code(args);
        assert_eq!(code, Some(2), "{args:?}: {out}{err}");
        assert!(err.contains(wrong), "{args:?}: {err}");
        for k in known {
            assert!(err.contains(k), "{args:?}: {k} missing in\n{err}");
        }
    }
    let (_, err, code) = xtask_code(&["genrate"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("generate"), "{err}");
    let (_, err, code) = xtask_code(&["generate", "--prompt", "x", "--top-k", "many"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("--top-k"), "{err}");
}

#[test]
fn check_refuses_what_is_not_a_notebook() {
    let dir = tempfile::tempdir().unwrap();
    let py = dir.path().join("exercise.py");
    std::fs::write(&py, "print('hello')\n").unwrap();
    let missing = dir.path().join("missing.ipynb");
    for (path, says) in [
        (missing.to_str().unwrap(), "não existe"),
        (dir.path().to_str().unwrap(), "é uma pasta"),
        (py.to_str().unwrap(), "não é um notebook"),
    ] {
        let (out, err, code) = xtask_code(&["check", path]);
        assert_eq!(code, Some(1), "{path}: {out}{err}");
        assert!(err.contains(says) && err.contains(path), "{path}: {err}");
        assert!(
            !err.contains("Traceback") && !out.contains("Traceback"),
            "{err}"
        );
    }
}

#[test]
fn model_commands_run_in_the_llm_lab_binary() {
    // Through cargo, as `cargo xtask tokenize` runs it: the ids of the course's binary, its errors
    // and exit codes passed on.
    let (out, err, code) = xtask_code(&["tokenize", "--text", "Certa vez"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out.lines().last().unwrap(), "[36134,81,1590,106]");
    let (out, err, code) = xtask_code(&["inspect", "--model", "/no/such/model.gguf"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("/no/such/model.gguf"), "{err}");
    let (_, err, code) = xtask_code(&["generate", "--prompt", "x", "--top-p", "1.5"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("top_p must be in (0, 1]"), "{err}");
}
