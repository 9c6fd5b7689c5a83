//! Warm spare kernels, through the real provisioner (`llm_lab_spares.py`) and launcher on a
//! temporary pool, driven by Jupyter's own kernel manager as the server drives them: a spare
//! handed to a new kernel answers like a cold kernel, a launch never waits for a warming spare,
//! a restart takes the spare, an interrupt reaches it, a spare nobody takes or whose sources
//! changed ends, and a server that exits or is killed leaves no evcxr. The warm-up here is a
//! trivial `let` (no course crate), so each kernel starts in seconds. Needs the lab installed
//! (`cargo xtask setup`); without it the tests say why and pass (fail under `CI=true`).

mod support;

use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The scenarios start kernels: one at a time on a 2-core machine.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// The warm-up cells of the test kernel: two, so a handed-out kernel's counts are shifted by 2.
/// The comment names a source folder as `:dep x = { path = "…" }` would.
const WARMUP: [&str; 2] = ["let __w = 1; // path = \"../src\"", ":clear"];

/// The evcxr binary the lab's kernelspec runs.
fn evcxr() -> Option<String> {
    let spec = support::root().join(".venv/share/jupyter/kernels/llm-lab/kernel.json");
    let spec: Value = serde_json::from_str(&std::fs::read_to_string(spec).ok()?).ok()?;
    spec["argv"][3].as_str().map(str::to_string)
}

/// A temporary kernelspec running the launcher from the source tree on a pool of its own,
/// through the provisioner.
fn setup(work: &Path, evcxr: &str) {
    let root = support::root();
    let spec_dir = work.join("jupyter/kernels/llm-lab-spare-test");
    for dir in [
        &spec_dir,
        &work.join("work"),
        &work.join("evcxr-config"),
        &work.join("src"),
    ] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(work.join("src/lib.rs"), "// v1\n").unwrap();
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
            "LLM_LAB_SPARE_WARMUP": json!(WARMUP).to_string(),
        },
        "metadata": {
            "kernel_provisioner": { "provisioner_name": "llm-lab-spares", "config": {} },
        },
    });
    std::fs::write(spec_dir.join("kernel.json"), spec.to_string()).unwrap();
}

/// Runs one scenario of `support/spare_driver.py`; its report, once every process it started
/// has ended (the test fails if one outlives it by more than a few seconds).
fn scenario(name: &str) -> Option<Value> {
    scenario_with(name, &[])
}

fn scenario_with(name: &str, env: &[(&str, &str)]) -> Option<Value> {
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
        // The provisioner's module from the source tree (the lab's entry point names it).
        .env("PYTHONPATH", support::root().join("crates/xtask/src"))
        .env("JUPYTER_PATH", work.path().join("jupyter"))
        .env("JUPYTER_RUNTIME_DIR", work.path().join("runtime"))
        .env("CANDLE_NUM_THREADS", "1")
        .env_remove("LLM_LAB_KERNEL_DIR")
        .env_remove("LLM_LAB_SPARE_KERNELS")
        .env_remove("LLM_LAB_PORTABLE")
        .envs(env.iter().copied())
        .status()
        .unwrap();
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
    assert!(
        status.success() || name == "killed",
        "the driver failed ({status})"
    );
    assert!(report["error"].is_null(), "{}", report["error"]);
    assert!(left.is_empty(), "left running: {left:?}");
    Some(report)
}

/// Counts, statuses and outputs of the test cells.
fn cells(r: &Value, which: &str) -> Vec<Value> {
    r[which].as_array().unwrap().clone()
}

#[test]
fn a_handed_out_spare_answers_like_a_cold_kernel() {
    let Some(r) = scenario("handed") else { return };
    assert_eq!(r["handed"], true, "the second kernel was not the spare");
    let (cold, spare) = (cells(&r, "cold"), cells(&r, "spare"));
    // evcxr numbers the warm-up's requests too: the spare's counts follow its 2 warm-up cells.
    for (c, s) in cold.iter().zip(&spare) {
        assert_eq!(
            s["count"].as_i64().unwrap(),
            c["count"].as_i64().unwrap() + WARMUP.len() as i64,
            "{c} {s}"
        );
        assert_eq!(s["count"], s["input_count"], "{s}");
        assert_eq!(c["status"], s["status"], "{c} {s}");
    }
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
    // priority once handed out.
    // SAFETY: no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    assert_eq!(r["nice_waiting"], if root { 10 } else { 0 });
    assert_eq!(r["nice_handed"], 0);
    assert_eq!(r["spare_gone_after_shutdown"], true);
    // The launcher's profile override beside the pool's build folders: dependencies without
    // overflow checks, the cells with.
    let profile = r["deps_profile"].as_str().unwrap_or_default();
    assert!(
        profile.contains("[profile.dev.package.\"*\"]")
            && profile.contains("overflow-checks = false"),
        "{profile}"
    );
}

#[test]
fn a_launch_never_waits_for_a_warming_spare() {
    let Some(r) = scenario("warming") else { return };
    assert_eq!(r["second_cold"], true);
    assert_eq!(r["spare_kept"], true);
    assert_eq!(r["same_spare_warmed"], true);
    assert_eq!(r["third_handed"], true);
    assert_eq!(r["third"]["output"], "2");
    let log = r["log"].to_string();
    assert!(
        log.contains("starts cold (its folder's spare is still warming)"),
        "{log}"
    );
}

#[test]
fn a_restart_takes_the_spare() {
    let Some(r) = scenario("restart") else { return };
    assert_eq!(r["restarted_on_spare"], true);
    assert_eq!(r["old_gone"], true);
    assert_eq!(r["after"]["output"], "42");
}

#[test]
fn an_interrupt_reaches_a_handed_out_spare() {
    let Some(r) = scenario("interrupt") else {
        return;
    };
    // The cell sleeps 60 s: its reply came because of the interrupt (the driver waits 50 s).
    assert_eq!(r["status"], "error");
    assert_eq!(r["after"]["output"], "2");
    assert_eq!(r["after"]["status"], "ok");
}

#[test]
fn a_spare_nobody_takes_ends() {
    let Some(r) = scenario_with("idle", &[("LLM_LAB_SPARE_MAX_IDLE", "1")]) else {
        return;
    };
    assert_eq!(r["spare_gone"], true);
    assert_eq!(r["spares_left"], 0);
    let log = r["log"].to_string();
    assert!(log.contains("ended: nobody took it"), "{log}");
}

#[test]
fn a_spare_whose_sources_changed_is_not_handed_out() {
    let Some(r) = scenario("changed") else { return };
    assert_eq!(r["second_cold"], true);
    assert_eq!(r["stale_gone"], true);
    let log = r["log"].to_string();
    assert!(log.contains("the sources it compiled changed"), "{log}");
}

/// `scenario` fails if a process the driver started outlives it: here the driver is killed
/// (Linux: the kernels end with their parent) ...
#[test]
fn a_killed_server_leaves_no_kernel_or_spare() {
    let Some(r) = scenario("killed") else { return };
    assert_eq!(r["pids"].as_array().unwrap().len(), 2);
}

/// ... or exits without shutting its spare down, on the portable path too (its exit handler).
#[test]
fn a_server_that_exits_leaves_no_spare() {
    for env in [&[][..], &[("LLM_LAB_PORTABLE", "1")][..]] {
        let Some(r) = scenario_with("exit", env) else {
            return;
        };
        assert_eq!(r["pids"].as_array().unwrap().len(), 1);
    }
}
