//! `cargo xtask check` on students' notebooks that never end or crash the kernel: each is reported,
//! the run ends, and no kernel process or temporary file is left behind. These run the real evcxr
//! kernel; without it (no `cargo xtask setup` yet) they say why and pass (fail under `CI=true`).

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

/// A notebook shaped like exercises/01: the course crate, the student's `attention`, its check,
/// then an untouched exercise and its check.
fn exercise_notebook(dir: &Path, name: &str, attention: &str) -> PathBuf {
    let dep = format!(
        ":dep llm-lab = {{ path = {:?} }}\nuse llm_lab::prelude::*;",
        support::root().join("crates/llm-lab").to_str().unwrap()
    );
    let cells = [
        dep.as_str(),
        attention,
        "check::attention(attention)",
        "fn multi_head(x: &Tensor, heads: &[HeadWeights], w_o: &Tensor) -> Result<Tensor> {\n    todo!()\n}",
        "check::multi_head(multi_head)",
    ];
    let nb = json!({
        "cells": cells.iter().map(|c| json!({"cell_type": "code", "execution_count": null, "metadata": {}, "outputs": [], "source": c})).collect::<Vec<_>>(),
        "metadata": {"kernelspec": {"display_name": "Rust (llm-lab)", "language": "rust", "name": "llm-lab"}},
        "nbformat": 4,
        "nbformat_minor": 4
    });
    let path = dir.join(name);
    std::fs::write(&path, nb.to_string()).unwrap();
    path
}

const LOOPS_FOREVER: &str = "fn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {\n    loop {\n        std::hint::spin_loop();\n    }\n}";

const OVERFLOWS_THE_STACK: &str = "#[allow(unconditional_recursion)]\nfn deeper(n: u64) -> u64 {\n    let frame = std::hint::black_box([n; 64]);\n    deeper(n + 1) + frame[0]\n}\nfn attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {\n    println!(\"{}\", deeper(0));\n    todo!()\n}";

/// Waits for `child`, killing it (and failing) if it runs past `guard`: a hang is the bug here.
fn wait_or_kill(child: &mut Child, guard: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if start.elapsed() > guard {
            let _ = child.kill();
            panic!("xtask check did not end within {guard:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The lines of one notebook's section in check's output.
fn section<'a>(out: &'a str, name: &str) -> Vec<&'a str> {
    out.lines()
        .skip_while(|l| *l != name)
        .skip(1)
        .take_while(|l| l.starts_with(' '))
        .collect()
}

fn assert_nothing_left(tag: &(String, String), scratch: &Path) {
    let left = support::tagged(&tag.0, &tag.1);
    assert!(left.is_empty(), "processes left running: {left:#?}");
    let files: Vec<_> = std::fs::read_dir(scratch)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert!(files.is_empty(), "temporary files left behind: {files:#?}");
}

#[test]
fn a_looping_and_a_crashing_exercise_are_reported_and_leave_nothing_running() {
    if let Some(why) = support::lab_missing() {
        support::missing(&why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let looping = exercise_notebook(dir.path(), "looping.ipynb", LOOPS_FOREVER);
    let crashing = exercise_notebook(dir.path(), "crashing.ipynb", OVERFLOWS_THE_STACK);
    let tag = support::tag("check-loop");
    let mut child = support::xtask(&tag)
        .arg("check")
        .arg(&looping)
        .arg(&crashing)
        .args(["--timeout", "90"])
        .env("TMPDIR", scratch.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = wait_or_kill(&mut child, Duration::from_secs(1800));
    let out = std::io::read_to_string(child.stdout.take().unwrap()).unwrap();
    let err = std::io::read_to_string(child.stderr.take().unwrap()).unwrap();
    eprintln!("{out}\n{err}");
    assert_eq!(
        status.code(),
        Some(1),
        "a notebook that cannot run fails the check"
    );
    assert!(
        err.contains("looping.ipynb") && err.contains("crashing.ipynb"),
        "{err}"
    );

    let looped = section(&out, "looping.ipynb");
    assert!(
        looped
            .iter()
            .any(|l| l.contains("❌ célula 2 (check::attention): tempo esgotado")),
        "{out}"
    );
    // The run goes on after the interrupted cell: the next exercise is reported too.
    let marks = |lines: &[&str]| {
        lines
            .iter()
            .filter(|l| ["  ✅", "  ⏳", "  ❌"].iter().any(|m| l.starts_with(m)))
            .count()
    };
    assert_eq!(marks(&looped), 2, "{out}");
    let crashed = section(&out, "crashing.ipynb");
    assert!(
        crashed
            .iter()
            .any(|l| l.contains("❌ célula 2 (check::attention): erro")),
        "{out}"
    );
    assert_eq!(marks(&crashed), 2, "{out}");
    assert!(!out.contains("Traceback") && !err.contains("Traceback"));
    assert_nothing_left(&tag, scratch.path());
}

/// CPU seconds used so far by the tagged evcxr processes.
fn evcxr_cpu_seconds(tag: &(String, String)) -> f64 {
    support::tagged(&tag.0, &tag.1)
        .iter()
        .filter(|(_, cmd)| cmd.contains("evcxr"))
        .filter_map(|(pid, _)| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name (which may hold spaces): utime is the 12th, stime the 13th.
            let rest = &stat[stat.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .sum()
}

#[test]
fn ctrl_c_stops_the_check_and_its_kernel() {
    if let Some(why) = support::lab_missing() {
        support::missing(&why);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let looping = exercise_notebook(dir.path(), "looping.ipynb", LOOPS_FOREVER);
    let tag = support::tag("check-ctrl-c");
    let mut cmd: Command = support::xtask(&tag);
    cmd.arg("check")
        .arg(&looping)
        .args(["--timeout", "3600"])
        .env("TMPDIR", scratch.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Its own process group, as a shell gives a foreground job: Ctrl-C reaches the whole group.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().unwrap();
    // The student's loop is running once evcxr burns CPU steadily (compiling is rustc's CPU).
    let start = Instant::now();
    while evcxr_cpu_seconds(&tag) < 15.0 && start.elapsed() < Duration::from_secs(1200) {
        assert!(
            child.try_wait().unwrap().is_none(),
            "check ended on its own"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(
        support::tagged(&tag.0, &tag.1)
            .iter()
            .any(|(_, c)| c.contains("evcxr")),
        "no kernel started"
    );
    let pgid = libc::pid_t::try_from(child.id()).unwrap();
    // SAFETY: plain system call on the group the test created.
    assert_eq!(unsafe { libc::killpg(pgid, libc::SIGINT) }, 0);
    let status = wait_or_kill(&mut child, Duration::from_secs(120));
    assert_eq!(status.code(), Some(130));
    assert_nothing_left(&tag, scratch.path());
}
