//! `cargo xtask ci-fresh` on a stand-in repository whose `.ci/run` looks at what it meets: a
//! clean clone (nothing uncommitted), an empty home with only the linked toolchain, no cache
//! variable of the caller's, `CI=true`; the steps it prints come back as a table, and a failing
//! run fails the command with the table still printed.

use std::path::Path;
use std::process::Command;

/// `.ci/run` of the stand-in: checks its surroundings (exit 3 and the reason if one is wrong),
/// then prints two steps; `FAIL` makes the second fail.
const CI_RUN: &str = r#"#!/bin/sh
set -u
fail() { echo "surroundings: $*"; exit 3; }
echo "==> look around"
[ "$CI" = true ] || fail "CI is not true"
[ -z "${LLM_LAB_CACHE:-}" ] || fail "the caller's LLM_LAB_CACHE leaked in"
[ ! -e uncommitted.txt ] || fail "an uncommitted file was cloned"
[ -e committed.txt ] || fail "the committed file is missing"
[ "$(ls -A "$HOME")" = ".cargo" ] || fail "the home folder holds $(ls -A "$HOME")"
[ "$CARGO_HOME" = "$HOME/.cargo" ] || fail "CARGO_HOME is $CARGO_HOME"
[ "$(command -v cargo)" = "$CARGO_HOME/bin/cargo" ] || fail "cargo is $(command -v cargo)"
cargo --version >/dev/null || fail "the linked cargo does not run"
[ ! -e "$CARGO_HOME/bin/evcxr_jupyter" ] || fail "the machine's evcxr_jupyter was linked in"
echo "<== look around: ok in 0.1 s"
echo "==> second step"
if [ -e FAIL ]; then echo "<== second step: FAILED in 0.0 s"; exit 1; fi
echo "<== second step: ok in 0.0 s"
"#;

fn git(repo: &Path, args: &[&str]) {
    let status = Command::new("git")
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .current_dir(repo)
        .status()
        .unwrap();
    assert!(status.success(), "git {args:?}");
}

/// A repository with the stand-in `.ci/run`, `fail` deciding whether its second step fails.
fn stand_in(fail: bool) -> tempfile::TempDir {
    let repo = tempfile::tempdir().unwrap();
    let p = repo.path();
    git(p, &["init", "--quiet"]);
    std::fs::create_dir(p.join(".ci")).unwrap();
    std::fs::write(p.join(".ci/run"), CI_RUN).unwrap();
    std::fs::set_permissions(
        p.join(".ci/run"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(p.join("committed.txt"), "x").unwrap();
    if fail {
        std::fs::write(p.join("FAIL"), "").unwrap();
    }
    git(p, &["add", "."]);
    git(p, &["commit", "--quiet", "-m", "stand-in"]);
    std::fs::write(p.join("uncommitted.txt"), "x").unwrap();
    repo
}

fn ci_fresh(repo: &Path, dir: &Path) -> (String, String, bool) {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["ci-fresh", "--keep-test-users", "--source"])
        .arg(repo)
        .arg("--dir")
        .arg(dir)
        .env("LLM_LAB_CACHE", "/somewhere/else")
        .output()
        .unwrap();
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        out.status.success(),
    )
}

#[test]
fn a_fresh_run_meets_a_clean_clone_and_an_empty_home_and_times_each_step() {
    let repo = stand_in(false);
    let dir = tempfile::tempdir().unwrap();
    let (stdout, stderr, ok) = ci_fresh(repo.path(), &dir.path().join("run"));
    assert!(ok, "{stdout}\n{stderr}");
    for row in [
        "| look around | 0:00 |",
        "| second step | 0:00 |",
        "| total | 0:",
    ] {
        assert!(stdout.contains(row), "{row} missing in\n{stdout}");
    }
    let tsv = std::fs::read_to_string(dir.path().join("run/steps.tsv")).unwrap();
    assert!(tsv.starts_with("step\tstart_s\tseconds\tok\n"), "{tsv}");
    assert!(tsv.contains("look around\t"), "{tsv}");
    // The log keeps every line, stamped.
    let log = std::fs::read_to_string(dir.path().join("run/ci.log")).unwrap();
    assert!(log.contains("] ==> second step"), "{log}");
}

#[test]
fn a_failing_run_fails_the_command_and_still_reports_its_steps() {
    let repo = stand_in(true);
    let dir = tempfile::tempdir().unwrap();
    let (stdout, stderr, ok) = ci_fresh(repo.path(), &dir.path().join("run"));
    assert!(!ok, "{stdout}\n{stderr}");
    assert!(stdout.contains("| look around | 0:00 |"), "{stdout}");
    assert!(stdout.contains("| second step (FAILED) |"), "{stdout}");
    assert!(stderr.contains(".ci/run failed"), "{stderr}");
}

#[test]
fn a_folder_that_is_not_empty_is_refused() {
    let repo = stand_in(false);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("something"), "").unwrap();
    let (stdout, stderr, ok) = ci_fresh(repo.path(), dir.path());
    assert!(!ok, "{stdout}\n{stderr}");
    assert!(stderr.contains("is not empty"), "{stderr}");
}
