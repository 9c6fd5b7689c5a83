//! `cargo xtask bench-notebook`: how long a student waits on the course's kernel — a new kernel
//! to its first logits, a restart to its first logits, a trivial cell — step by step, cold and
//! in the lab's server with its warm spare kernels.

use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::lab::Lab;
use crate::process::{Ended, Supervised};

/// The client that drives the kernel and times each step (see the file).
const SCRIPT: &str = include_str!("bench_notebook.py");

/// The cells a lesson starts with: the course crate, the model, the first logits.
fn first_cells() -> Value {
    json!([
        ["`:dep` cell", crate::notebooks::SETUP_CELL],
        ["model load", "let model = Model::load_default()?;"],
        [
            "first logits",
            "let logits = model.logits(\"The capital of France is\")?;\nprintln!(\"{:?}\", logits.top_k(3));"
        ],
    ])
}

/// One timed step, as the client reports it.
#[derive(Debug, Clone)]
pub struct Step {
    pub phase: String,
    pub step: String,
    pub seconds: f64,
    pub error: Option<String>,
}

/// Parses the client's report; an error it recorded (the kernel did not start, a cell failed)
/// is an error here.
pub fn parse_report(report: &Value) -> Result<Vec<Step>> {
    let steps: Vec<Step> = report["steps"]
        .as_array()
        .context("the benchmark wrote no steps")?
        .iter()
        .map(|s| Step {
            phase: s["phase"].as_str().unwrap_or_default().to_string(),
            step: s["step"].as_str().unwrap_or_default().to_string(),
            seconds: s["seconds"].as_f64().unwrap_or(f64::NAN),
            error: s["error"].as_str().map(str::to_string),
        })
        .collect();
    if let Some(e) = report["error"].as_str() {
        bail!("the benchmark stopped: {e}");
    }
    if let Some(s) = steps.iter().find(|s| s.error.is_some()) {
        bail!(
            "{}: {} failed: {}",
            s.phase,
            s.step,
            s.error.as_deref().unwrap_or_default()
        );
    }
    Ok(steps)
}

/// The table printed at the end: one line per step.
pub fn table(steps: &[Step]) -> String {
    let mut out = String::from("phase           step                      seconds\n");
    for s in steps {
        out.push_str(&format!(
            "{:<15} {:<25} {:>7.2}\n",
            s.phase, s.step, s.seconds
        ));
    }
    out
}

/// The notes the client printed besides the steps (how long spares took to warm, their memory).
pub fn notes(report: &Value) -> Vec<String> {
    report["notes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| {
            format!(
                "load average {}",
                l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")
            )
        })
        .unwrap_or_else(|_| "load average unknown".into())
}

/// A kernelspec like the lab's whose launcher keeps its build folders in `pool`, a folder of
/// the benchmark's own that takes the lab's warmed template (and its lock) by symbolic links:
/// the lab's own build folders are neither used nor disturbed.
fn bench_kernel(lab: &Lab, dir: &std::path::Path, name: &str) -> Result<Value> {
    let evcxr = crate::lab::evcxr_binary().context("evcxr_jupyter is not installed")?;
    let pool = dir.join("pool");
    std::fs::create_dir_all(&pool)?;
    let template = lab.template();
    std::os::unix::fs::symlink(&template, pool.join("template"))?;
    std::os::unix::fs::symlink(template.with_extension("lock"), pool.join("template.lock"))?;
    let mut spec = lab.kernel_spec(&evcxr);
    spec["argv"][2] = json!(pool);
    let spec_dir = dir.join("jupyter").join("kernels").join(name);
    std::fs::create_dir_all(&spec_dir)?;
    std::fs::write(spec_dir.join("kernel.json"), spec.to_string())?;
    Ok(json!({
        "kernel": name,
        "jupyter_path": dir.join("jupyter"),
        "pool": pool,
    }))
}

/// `cargo xtask bench-notebook`. Cold: the kernel builds in a new folder seeded from the warmed
/// template, as the first kernel of a notebook after setup does; the restart reuses it. Then
/// with spares, as a student meets them in the lab (see `bench_notebook.py`).
pub fn bench_notebook(trivial_runs: u32) -> Result<()> {
    let lab = Lab::new();
    if !lab.is_ready() {
        crate::lab::setup()?;
    }
    if !lab.template_is_current() {
        crate::lab::timed(
            "the course crate changed: warm the kernels' template build folder again",
            || crate::lab::warm(&lab),
        )?;
    }
    let tmp = tempfile::Builder::new()
        .prefix("llm-lab-bench-notebook-")
        .tempdir()?;
    let (script, cells, out) = (
        tmp.path().join("bench_notebook.py"),
        tmp.path().join("cells.json"),
        tmp.path().join("out.json"),
    );
    std::fs::write(&script, SCRIPT)?;
    // The lab's server with its spare-warming extension, on a pool of the benchmark's own: its
    // kernelspec takes the lab kernel's name (JUPYTER_PATH comes first).
    lab.write_settings()?;
    let mut in_lab = bench_kernel(&lab, &tmp.path().join("lab"), crate::lab::KERNEL_NAME)?;
    in_lab["jupyter"] = json!(lab.jupyter());
    in_lab["root"] = json!(lab.root);
    in_lab["notebook"] = json!(lab.first_lesson().context("no lesson in notebooks/")?);
    std::fs::write(
        &cells,
        json!({"first": first_cells(), "trivial": "1 + 1", "trivial_runs": trivial_runs,
               "lab": in_lab})
        .to_string(),
    )?;
    let folder = tmp.path().join("kernel");
    let other_tmp = tmp.path().join("tmp");
    std::fs::create_dir(&other_tmp)?;
    let mut cmd = Command::new(lab.python());
    cmd.arg(&script)
        .arg(crate::lab::KERNEL_NAME)
        .arg(&cells)
        .arg(&out)
        // Where the lessons are, so the `:dep` cell's relative path is theirs.
        .current_dir(lab.root.join("notebooks"))
        .env("TMPDIR", &other_tmp)
        .env("JUPYTER_PATH", tmp.path().join("lab").join("jupyter"))
        .env_remove("LLM_LAB_SPARE_KERNELS")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    lab.kernel_env(&mut cmd, &folder);
    eprintln!("before: {}", load_average());
    // The client prints each step as it ends (a cold build takes minutes) on the inherited stderr.
    let mut child = Supervised::spawn(&mut cmd).context("cannot run the benchmark's client")?;
    match child.wait(Duration::from_secs(3 * 3600))? {
        Ended::TimedOut => bail!("the benchmark did not finish within 3 hours"),
        Ended::Exited(s) if !s.success() => bail!("the benchmark's client failed ({s})"),
        Ended::Exited(_) => {}
    }
    drop(child);
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(&out).context("the benchmark wrote no report")?,
    )?;
    let steps = parse_report(&report)?;
    eprintln!("after: {}", load_average());
    for n in notes(&report) {
        eprintln!("note: {n}");
    }
    print!("{}", table(&steps));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_step_is_an_error_and_a_good_report_a_table() {
        let good = json!({"steps": [
            {"phase": "fresh kernel", "step": "kernel ready", "seconds": 1.5, "ok": true, "error": null},
            {"phase": "fresh kernel", "step": "`:dep` cell", "seconds": 2.25, "ok": true, "error": null}
        ], "error": null});
        let steps = parse_report(&good).unwrap();
        let t = table(&steps);
        assert!(
            t.contains("kernel ready") && t.contains("1.50") && t.contains("2.25"),
            "{t}"
        );
        let failed = json!({"steps": [
            {"phase": "fresh kernel", "step": "model load", "seconds": 3.0, "ok": false, "error": "E0425: no"}
        ], "error": null});
        let e = parse_report(&failed).unwrap_err().to_string();
        assert!(e.contains("model load") && e.contains("E0425"), "{e}");
        let stopped = json!({"steps": [], "error": "TimeoutError: kernel"});
        assert!(parse_report(&stopped)
            .unwrap_err()
            .to_string()
            .contains("TimeoutError"));
    }
}
