//! A test whose lab is missing fails under `CI=true`, saying what to run; elsewhere it says it
//! skipped and is logged as skipped (`cargo xtask test` counts the file named by
//! `LLM_LAB_SKIPPED_LOG`). Shown in child runs of this test binary on a checkout with no lab.

mod support;

use std::path::Path;
use std::process::{Command, Output};

#[test]
#[ignore = "run by a_missing_lab_fails_under_ci_and_is_logged_as_skipped_elsewhere"]
fn needs_a_lab() {
    let checkout = std::env::var("LLM_LAB_TEST_CHECKOUT").unwrap();
    match support::lab_missing_at(Path::new(&checkout)) {
        Some(why) => support::missing(&why),
        None => panic!("a lab in {checkout}"),
    }
}

fn child(ci: bool, checkout: &Path, log: &Path) -> (bool, String) {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "needs_a_lab", "--ignored", "--nocapture"])
        .env("LLM_LAB_TEST_CHECKOUT", checkout)
        .env("LLM_LAB_SKIPPED_LOG", log);
    if ci {
        cmd.env("CI", "true");
    } else {
        cmd.env_remove("CI");
    }
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&stdout),
        String::from_utf8_lossy(&stderr)
    );
    (status.success(), text)
}

#[test]
fn a_missing_lab_fails_under_ci_and_is_logged_as_skipped_elsewhere() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("skipped.log");
    std::fs::write(&log, "").unwrap();
    // A checkout whose lab was removed: no .venv; then one whose kernelspec cannot be read.
    let (passed, text) = child(true, dir.path(), &log);
    assert!(!passed, "passed under CI=true without a lab:\n{text}");
    assert!(
        text.contains("a prerequisite is missing") && text.contains("run `cargo xtask setup`"),
        "{text}"
    );
    std::fs::create_dir_all(dir.path().join(".venv/bin")).unwrap();
    std::fs::write(dir.path().join(".venv/bin/python"), "").unwrap();
    let (passed, text) = child(true, dir.path(), &log);
    assert!(!passed, "passed under CI=true with no kernelspec:\n{text}");
    assert!(text.contains("cannot read the lab's kernelspec"), "{text}");
    let (passed, text) = child(false, dir.path(), &log);
    assert!(passed, "{text}");
    assert!(text.contains("SKIPPED needs_a_lab"), "{text}");
    let logged = std::fs::read_to_string(&log).unwrap();
    assert_eq!(logged.lines().count(), 1, "{logged}");
    assert!(
        logged.starts_with("needs_a_lab: cannot read the lab's kernelspec"),
        "{logged}"
    );
}
