//! What the kernel and lab tests share: where the lab is, whether it is installed, and the
//! processes a test started (found by a tag in their environment, which every child inherits).

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The repository (the worktree the tests were built from).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .and_then(|p| p.parent())
        .unwrap()
        .to_path_buf()
}

/// Why the notebook stack cannot run here, if it cannot (`cargo xtask setup` installs it).
pub fn lab_missing() -> Option<String> {
    lab_missing_at(&root())
}

/// Why the notebook stack of the checkout `root` cannot run, if it cannot.
pub fn lab_missing_at(root: &std::path::Path) -> Option<String> {
    let python = root.join(".venv/bin/python");
    let kernel = root.join(".venv/share/jupyter/kernels/llm-lab/kernel.json");
    if !python.exists() {
        return Some(format!(
            "{} is missing: run `cargo xtask setup`",
            python.display()
        ));
    }
    let spec = match std::fs::read_to_string(&kernel) {
        Ok(spec) => spec,
        Err(e) => {
            return Some(format!(
                "cannot read the lab's kernelspec {} ({e}): run `cargo xtask setup`",
                kernel.display()
            ))
        }
    };
    let argv = serde_json::from_str::<serde_json::Value>(&spec)
        .ok()
        .and_then(|spec| spec["argv"].as_array().cloned());
    let Some(argv) = argv else {
        return Some(format!(
            "the lab's kernelspec {} has no command line: run `cargo xtask setup`",
            kernel.display()
        ));
    };
    // The kernel's command line: the launcher's Python and script, the evcxr binary.
    let missing = argv
        .iter()
        .filter_map(|a| a.as_str())
        .filter(|a| a.starts_with('/') && !a.ends_with("kernels"))
        .find(|a| !std::path::Path::new(a).exists())?;
    Some(format!(
        "{missing} of the kernel is not installed: run `cargo xtask setup`"
    ))
}

/// A test cannot run because `why` (a prerequisite is missing). Under `CI=true` that fails the
/// test, saying what is missing; on a developer's machine the test says it is skipped and passes.
pub fn missing(why: &str) {
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("a prerequisite is missing (CI=true, so this fails instead of skipping): {why}");
    }
    let test = std::thread::current().name().unwrap_or("?").to_string();
    eprintln!("SKIPPED {test}: {why}");
    // `cargo xtask test` counts the skipped tests from this file.
    if let Some(log) = std::env::var_os("LLM_LAB_SKIPPED_LOG") {
        use std::io::Write;
        let file = std::fs::OpenOptions::new().append(true).open(log);
        let _ = file.and_then(|mut f| writeln!(f, "{test}: {why}"));
    }
}

// The system users the tests make, one per test, leased under a lock (shared with `ci-fresh`).
#[path = "../../src/test_users.rs"]
mod test_users;
#[allow(unused_imports)]
pub use test_users::{remove_test_user, test_user, TestUser};

/// A tag unique to one test run, to put in the environment of the processes it starts.
pub fn tag(name: &str) -> (String, String) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    (
        "LLM_LAB_TEST_TAG".to_string(),
        format!("{name}-{}-{nanos}", std::process::id()),
    )
}

/// Live processes whose environment holds `key=value`, with their command lines.
pub fn tagged(key: &str, value: &str) -> Vec<(u32, String)> {
    let entry = format!("{key}={value}");
    let mut found = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.split(|&b| b == 0).any(|kv| kv == entry.as_bytes()) {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            found.push((pid, cmdline));
        }
    }
    found
}

/// The xtask binary, with the test's tag in its environment.
pub fn xtask(tag: &(String, String)) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    cmd.env(&tag.0, &tag.1).env("CANDLE_NUM_THREADS", "1");
    cmd
}
