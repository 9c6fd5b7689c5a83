//! Warm spare kernels, through the real launcher (`launch_kernel.py`) on a temporary pool: a
//! claimed spare answers like a cold kernel, two launches racing for one spare both work, a
//! killed proxy or a gone server leaves no evcxr behind, an interrupt reaches the spare, a spare
//! nobody claims ends, and the folders of killed keepers are swept. The
//! warm-up here is a trivial `let` (no course crate), so each kernel starts in seconds. Needs
//! the lab installed (`cargo xtask setup`); without it the tests say why and pass (fail under `CI=true`).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The scenarios start kernels: one at a time on a 2-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The evcxr binary the lab's kernelspec runs.
fn evcxr() -> Option<String> {
    let spec = support::root().join(".venv/share/jupyter/kernels/llm-lab/kernel.json");
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(spec).ok()?).ok()?;
    spec["argv"][3].as_str().map(str::to_string)
}

/// A temporary kernelspec running the launcher from the source tree on a pool of its own.
fn setup(work: &Path, evcxr: &str) -> PathBuf {
    let root = support::root();
    let spec_dir = work.join("jupyter/kernels/llm-lab-spare-test");
    std::fs::create_dir_all(&spec_dir).unwrap();
    std::fs::create_dir_all(work.join("work")).unwrap();
    std::fs::create_dir_all(work.join("evcxr-config")).unwrap();
    let spec = json!({
        "argv": [
            root.join(".venv/bin/python"),
            root.join("crates/xtask/src/launch_kernel.py"),
            work.join("pool"),
            evcxr,
            "{connection_file}"
        ],
        "display_name": "spare test",
        "language": "rust",
        "interrupt_mode": "message",
        "env": {
            "EVCXR_CONFIG_DIR": work.join("evcxr-config"),
            "LLM_LAB_SPARE_WARMUP": json!(["let __w = 1;", ":clear"]).to_string(),
        },
    });
    std::fs::write(spec_dir.join("kernel.json"), spec.to_string()).unwrap();
    work.join("pool")
}

/// Runs one scenario of `support/spare_driver.py`; its report, once every process it started
/// has ended (the test fails if one outlives it by more than a few seconds).
fn scenario(name: &str) -> Option<Value> {
    if let Some(why) = support::lab_missing() {
        support::missing(&why);
        return None;
    }
    let Some(evcxr) = evcxr() else {
        support::missing("the lab's kernelspec names no evcxr binary: run `cargo xtask setup`");
        return None;
    };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let work = tempfile::Builder::new()
        .prefix("llm-lab-spare-")
        .tempdir()
        .unwrap();
    setup(work.path(), &evcxr);
    let out = work.path().join("out.json");
    let tag = support::tag(&format!("spare-{name}"));
    let status = Command::new(support::root().join(".venv/bin/python"))
        .arg(support::root().join("crates/xtask/tests/support/spare_driver.py"))
        .arg(name)
        .arg(work.path())
        .arg(&out)
        .env(&tag.0, &tag.1)
        .env("JUPYTER_PATH", work.path().join("jupyter"))
        .env("CANDLE_NUM_THREADS", "1")
        .env_remove("LLM_LAB_KERNEL_DIR")
        .env_remove("LLM_LAB_SPARE_KERNELS")
        .status()
        .unwrap();
    // Keepers notice that the driver is gone within a poll or two.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut left = support::tagged(&tag.0, &tag.1);
    while !left.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        left = support::tagged(&tag.0, &tag.1);
    }
    for (pid, _) in &left {
        // SAFETY: plain system call on a process this test started.
        unsafe {
            libc::kill(*pid as libc::pid_t, libc::SIGKILL);
        }
    }
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&report).unwrap());
    assert!(status.success(), "the driver failed");
    assert!(report["error"].is_null(), "{}", report["error"]);
    assert!(left.is_empty(), "left running: {left:?}");
    Some(report)
}

#[test]
fn a_claimed_spare_answers_like_a_cold_kernel() {
    let Some(r) = scenario("claimed") else { return };
    assert_eq!(r["kinds"], json!(["cold", "proxy"]));
    let (cold, spare) = (
        r["cold"].as_array().unwrap(),
        r["spare"].as_array().unwrap(),
    );
    // The warm-up's executions are not counted: the same numbers as a cold kernel, one per cell.
    for (c, s) in cold.iter().zip(spare) {
        assert_eq!(c["count"], s["count"], "{c} {s}");
        assert_eq!(s["count"], s["input_count"], "{s}");
        assert_eq!(c["status"], s["status"], "{c} {s}");
    }
    let counts: Vec<i64> = spare.iter().map(|s| s["count"].as_i64().unwrap()).collect();
    assert!(counts.windows(2).all(|w| w[1] == w[0] + 1), "{counts:?}");
    assert_eq!(spare[1]["output"], "42");
    assert_eq!(spare[2]["output"], "hi 42\n");
    assert_eq!(spare[3]["status"], "error");
    assert!(
        spare[3]["errors"].to_string().contains("mismatched types"),
        "{}",
        spare[3]
    );
    // `:vars` lists the student's variable, not the warm-up's.
    let vars = spare[4]["output"].as_str().unwrap();
    assert!(vars.contains("a: i32") && !vars.contains("__w"), "{vars}");
    assert_eq!(r["beating"], json!([true, true]));
    // Niced while it waited (where the priority can be given back: root here), a kernel's
    // priority once claimed.
    // SAFETY: no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert_eq!(r["nice"], json!([if root { 10 } else { 0 }, 0]));
    assert_eq!(r["spare_evcxr_gone"], true);
    assert_eq!(r["claimed_folder_removed"], true);
}

#[test]
fn a_spare_claimed_while_warming_hides_the_warm_up() {
    let Some(r) = scenario("warming") else { return };
    assert_eq!(r["kinds"], json!(["proxy"]));
    let (cold, spare) = (
        r["cold"].as_array().unwrap(),
        r["spare"].as_array().unwrap(),
    );
    for (c, s) in cold.iter().zip(spare) {
        assert_eq!(c["count"], s["count"], "{c} {s}");
        assert_eq!(c["output"], s["output"], "{c} {s}");
    }
    // Jupyter had its kernel (kernel_info answered by the proxy with evcxr's own reply) while
    // the warm-up still ran; the student's cells queued behind it, and its output never
    // reached the student.
    assert_eq!(r["ready_before_warm_up_ended"], true);
    assert_eq!(r["warm_up_ended"], true);
    assert_eq!(
        r["kernel_info"]["implementation"], "evcxr_jupyter",
        "{}",
        r["kernel_info"]
    );
    assert_eq!(r["kernel_info"]["status"], "ok");
    assert_eq!(r["kernel_info"], r["kernel_info_after"]);
    assert_eq!(r["claimed_folder_ready"], false);
    // Claimed during its first cell, the warm-up ended with it (the `let` and its `:clear`
    // were not run), and the counts above are shifted by that one cell.
    assert_eq!(r["warm_up_cells_run"], "1");
    let seen = r["seen"].to_string();
    assert!(
        seen.contains("hi 42") && !seen.contains("warm-up output"),
        "{seen}"
    );
}

#[test]
fn two_launches_racing_for_one_spare_both_work() {
    let Some(r) = scenario("race") else { return };
    assert_eq!(r["kinds"], json!(["cold", "proxy"]));
    assert_eq!(r["answers"], json!(["2", "2"]));
}

#[test]
fn a_killed_proxy_leaves_no_evcxr() {
    let Some(r) = scenario("kill") else { return };
    assert_eq!(r["kinds"], json!(["proxy"]));
    assert_eq!(r["before"], true);
    assert_eq!(r["spare_evcxr_gone"], true);
    assert_eq!(r["claimed_folder_removed"], true);
    // The spare's slot is free again (the next spare's keeper ended with the driver).
    let free = r["slot_locks_free"].as_array().unwrap();
    assert!(!free.is_empty() && free[0] == true, "{free:?}");
}

#[test]
fn a_keeper_ends_with_the_process_it_watches() {
    let Some(r) = scenario("watched") else { return };
    assert_eq!(r["before"], json!([true, true]));
    assert_eq!(r["keeper_gone"], true);
    assert_eq!(r["evcxr_gone"], true);
    assert_eq!(r["folder_removed"], true);
    assert_eq!(r["slot_locks_free"], json!([true]));
}

#[test]
fn an_interrupt_reaches_the_spare() {
    let Some(r) = scenario("interrupt") else {
        return;
    };
    assert_eq!(r["kinds"], json!(["proxy"]));
    // The cell sleeps 60 s: its reply came because of the interrupt (the driver waits 50 s).
    assert_eq!(r["status"], "error");
    assert_eq!(r["after"]["output"], "2");
    assert_eq!(r["after"]["status"], "ok");
}

#[test]
fn stale_folders_are_swept_and_an_unclaimed_spare_ends() {
    let Some(r) = scenario("tidy") else { return };
    assert_eq!(r["stale_removed"], json!([true, true, true]));
    assert_eq!(r["old_key_removed"], json!([true, true]));
    assert_eq!(r["new_key_kept"], json!([true, true]));
    let log = r["log"].as_str().unwrap();
    assert!(log.contains("spare warm in"), "{log}");
    assert!(log.contains("nobody claimed it in 1 s"), "{log}");
    assert_eq!(r["left"], json!([]));
    assert_eq!(r["slot_locks_free"], json!([true]));
}

#[test]
fn a_spare_ends_when_the_sources_it_compiled_change() {
    let Some(r) = scenario("changed") else { return };
    assert_eq!(r["kept_while_unchanged"], true);
    assert_eq!(r["evcxr_gone"], true);
    assert_eq!(r["folder_removed"], true);
    let log = r["log"].as_str().unwrap();
    assert!(log.contains("the sources it compiled changed"), "{log}");
}
