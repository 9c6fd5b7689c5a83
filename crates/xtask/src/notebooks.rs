//! Notebooks as code: execute them headless on the real kernel, judge their outputs, write
//! outputs back, and generate exercises from solutions.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};

use crate::lab::Lab;
use crate::process::{Ended, Supervised};

/// The first cell of every notebook: the helper crate by a path that works from notebooks/,
/// exercises/ and solutions/ alike, and everything a lesson needs in scope.
pub const SETUP_CELL: &str =
    ":dep llm-lab = { path = \"../crates/llm-lab\" }\nuse llm_lab::prelude::*;";

/// Marks the lines of a solution that become `todo!()` in the exercise.
const BEGIN: &str = "// BEGIN SOLUTION";
const END: &str = "// END SOLUTION";

/// What the check module prints for tooling, one line per exercise, and after a failed one the
/// hint: the protocol lives in the library, which writes it.
pub use llm_lab_shared::protocol::{HINT_PREFIX, REPORT_PREFIX};

pub fn new_notebook(cells: &[&str]) -> Value {
    json!({
        "cells": cells.iter().map(|c| code_cell(c)).collect::<Vec<_>>(),
        "metadata": kernel_metadata(),
        "nbformat": 4,
        "nbformat_minor": 5
    })
}

fn kernel_metadata() -> Value {
    json!({
        "kernelspec": {"display_name": "Rust (llm-lab)", "language": "rust", "name": crate::lab::KERNEL_NAME},
        "language_info": {"codemirror_mode": "rust", "file_extension": ".rs", "mimetype": "text/rust", "name": "Rust", "pygment_lexer": "rust", "version": ""}
    })
}

fn code_cell(source: &str) -> Value {
    json!({"cell_type": "code", "execution_count": null, "metadata": {}, "outputs": [], "source": split_source(source)})
}

fn split_source(s: &str) -> Vec<String> {
    s.split_inclusive('\n').map(str::to_string).collect()
}

pub fn source_of(cell: &Value) -> String {
    match &cell["source"] {
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
        Value::String(s) => s.clone(),
        _ => String::new(),
    }
}

pub fn read(path: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid notebook", path.display()))
}

fn write(path: &Path, nb: &Value) -> Result<()> {
    let mut text = serde_json::to_string_pretty(nb)?;
    text.push('\n');
    let tmp = path.with_extension("ipynb.tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

/// Time limits of a notebook run, in seconds.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Each cell's.
    pub cell: u64,
    /// A `:dep` cell's: it compiles crates (candle, on a cold cache, for minutes), which is the
    /// machine's time, not the code's.
    pub dep: u64,
    /// Stop at the first cell that fails (lessons, solutions), or run them all (a student's
    /// notebook, so that one mistake does not hide the other exercises).
    pub stop_on_error: bool,
    /// Run without network (grading other people's code), see [`offline_command`].
    pub offline: bool,
    /// Threads of the kernel's matrix maths (`CANDLE_NUM_THREADS`); None: candle's default, one
    /// per core. Kernels that run side by side share the cores instead of fighting over them.
    pub threads: Option<usize>,
}

impl Limits {
    /// Lessons, solutions and the warm-up: long limits, the first error ends the run.
    pub const SETUP: Limits = Limits {
        cell: 1800,
        dep: 3600,
        stop_on_error: true,
        offline: false,
        threads: None,
    };

    /// A student's notebook with `cell` seconds per cell.
    pub fn student(cell: u64) -> Limits {
        Limits {
            cell,
            dep: cell.max(1800),
            stop_on_error: false,
            offline: false,
            threads: None,
        }
    }
}

/// Why a run ended before its last cell.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopKind {
    /// A cell ran past its time limit.
    Timeout,
    /// The kernel died (a crash in a cell).
    KernelDied,
    /// A cell failed and the run stops at the first failure.
    CellError,
    /// The kernel could not start.
    NoKernel,
}

/// Where and why a run stopped early.
#[derive(Clone, Debug)]
pub struct Stop {
    pub kind: StopKind,
    /// The index of the cell that was running, if one was.
    pub cell: Option<usize>,
    pub message: String,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let what = match self.kind {
            StopKind::Timeout => "timed out",
            StopKind::KernelDied => "the kernel died",
            StopKind::CellError => "error",
            StopKind::NoKernel => "the kernel did not start",
        };
        match self.cell {
            Some(i) => write!(f, "cell {i}: {what}: {}", self.message),
            None => write!(f, "{what}: {}", self.message),
        }
    }
}

/// An executed notebook: every cell that ran has its outputs; `stop` says why it ended early.
pub struct Run {
    pub nb: Value,
    pub stop: Option<Stop>,
    /// Cells interrupted after their time limit, the run going on after them (students' runs).
    pub timeouts: Vec<usize>,
}

/// Whether `LLM_LAB_PORTABLE=1` asks for the portable path: no Linux-only acceleration (network
/// namespaces here, the kernel ending with a killed server in `launch_kernel.py`), as on macOS.
pub fn portable() -> bool {
    is_portable(std::env::var_os("LLM_LAB_PORTABLE").as_deref())
}

fn is_portable(value: Option<&std::ffi::OsStr>) -> bool {
    value.is_some_and(|v| v == "1")
}

/// `program` in a network namespace of its own where only loopback (which the kernel talks over)
/// is up, when the system allows one (Linux with user namespaces, or root); otherwise plain, with
/// cargo offline and the proxies of Python and curl pointing nowhere, which says so once.
pub fn offline_command(program: &Path) -> Command {
    static ISOLATED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    const WRAP: [&str; 6] = [
        "--net",
        "--map-root-user",
        "--",
        "sh",
        "-c",
        "ip link set lo up && exec \"$0\" \"$@\"",
    ];
    let isolated = *ISOLATED.get_or_init(|| {
        let works = cfg!(target_os = "linux")
            && !portable()
            && Command::new("unshare")
                .args(WRAP)
                .arg("true")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
        if !works {
            eprintln!("warning: no network namespace here (unshare); the notebooks run with cargo offline and proxies closed, not isolated");
        }
        works
    });
    let mut cmd = if isolated {
        let mut c = Command::new("unshare");
        c.args(WRAP).arg(program);
        c
    } else {
        Command::new(program)
    };
    let nowhere = "http://127.0.0.1:9";
    cmd.env("CARGO_NET_OFFLINE", "true");
    for var in [
        "http_proxy",
        "https_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env(var, nowhere);
    }
    cmd.env_remove("no_proxy").env_remove("NO_PROXY");
    cmd
}

/// The executor xtask runs in the lab's Python (see the file for why not `nbconvert --execute`).
const RUNNER: &str = include_str!("run_notebook.py");

/// Executes `nb` on a fresh kernel with its own evcxr build folder (two kernels sharing one break
/// each other), within `limits`. The folder starts as a copy of the lab's warmed template, so the
/// course crate is not compiled again, and goes with the run: a student's code cannot leave
/// anything in a folder another kernel uses. The run is supervised: when it ends, times out or is
/// interrupted, no process it started is left running and its temporary folder is gone.
pub fn execute(lab: &Lab, nb: &Path, limits: Limits) -> Result<Run> {
    // The template is warmed again once per command when the course crate changed since (one
    // warm-up, however many notebooks run at once: the others wait for it).
    static CURRENT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    {
        let mut current = CURRENT.lock().unwrap_or_else(|e| e.into_inner());
        if !*current {
            if !lab.template_is_current() {
                crate::lab::timed(
                    "the course crate changed: warm the kernels' template build folder again",
                    || crate::lab::warm(lab),
                )?;
            }
            *current = true;
        }
    }
    execute_in(lab, nb, limits, None)
}

/// [`execute`] with the kernel's build folder: `None` for a copy of the template in the run's
/// temporary folder, or a folder that outlives the run (the template itself, when warming it).
pub fn execute_in(lab: &Lab, nb: &Path, limits: Limits, folder: Option<&Path>) -> Result<Run> {
    let source = read(nb)?;
    let tmp = tempfile::Builder::new().prefix("llm-lab-run-").tempdir()?;
    let (runner, out, status) = (
        tmp.path().join("run_notebook.py"),
        tmp.path().join("out.ipynb"),
        tmp.path().join("status.json"),
    );
    std::fs::write(&runner, RUNNER)?;
    // evcxr's work folder, and everyone's temporary files (rustc's, Python's): a killed compiler
    // cannot leave its files behind, they go with this folder.
    let other_tmp = tmp.path().join("tmp");
    std::fs::create_dir(&other_tmp)?;
    let evcxr_tmp = folder.map_or_else(|| tmp.path().join("evcxr"), Path::to_path_buf);
    let log_path = tmp.path().join("log.txt");
    let log = std::fs::File::create(&log_path)?;
    let dir = nb.parent().filter(|d| !d.as_os_str().is_empty());
    let mut cmd = if limits.offline {
        offline_command(&lab.python())
    } else {
        Command::new(lab.python())
    };
    cmd.arg(&runner)
        .arg(nb)
        .arg(&out)
        .arg(&status)
        .arg(crate::lab::KERNEL_NAME)
        .arg(limits.cell.to_string())
        .arg(limits.dep.to_string())
        .arg(if limits.stop_on_error { "1" } else { "0" })
        .current_dir(dir.unwrap_or(Path::new(".")))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    lab.kernel_env(&mut cmd, &evcxr_tmp);
    cmd.env("TMPDIR", &other_tmp);
    if let Some(n) = limits.threads {
        cmd.env("CANDLE_NUM_THREADS", n.to_string());
    }
    // A safety net above the executor's own limits: kernel start, every cell's limit, shutdown.
    let cells = source["cells"].as_array().map_or(0, Vec::len) as u64;
    let overall = 300u64
        .saturating_add(limits.dep)
        .saturating_add(limits.cell.saturating_mul(cells));
    let mut child = Supervised::spawn(&mut cmd)
        .context("cannot run the notebook executor; run `cargo xtask setup`")?;
    let ended = child.wait(Duration::from_secs(overall))?;
    drop(child);
    let log_tail = || {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    match ended {
        Ended::TimedOut => bail!(
            "{} did not finish within {overall} s and was stopped",
            nb.display()
        ),
        Ended::Exited(s) if !s.success() => bail!(
            "the notebook executor failed on {} ({s}):\n{}",
            nb.display(),
            log_tail()
        ),
        Ended::Exited(_) => {}
    }
    let status: Value = serde_json::from_str(
        &std::fs::read_to_string(&status).context("the notebook executor wrote no status")?,
    )?;
    let stop = status["stopped"].as_str().map(|kind| Stop {
        kind: match kind {
            "timeout" => StopKind::Timeout,
            "dead" => StopKind::KernelDied,
            "error" => StopKind::CellError,
            _ => StopKind::NoKernel,
        },
        cell: status["cell"]
            .as_u64()
            .and_then(|i| usize::try_from(i).ok()),
        message: status["message"].as_str().unwrap_or_default().to_string(),
    });
    let timeouts = status["timeouts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| usize::try_from(i.as_u64()?).ok())
        .collect();
    Ok(Run {
        nb: read(&out)?,
        stop,
        timeouts,
    })
}

/// Every output of every cell as text (streams, plain text, HTML, errors), each output on lines of
/// its own so that a report line never sticks to the HTML before it.
pub fn all_output_text(nb: &Value) -> String {
    let mut s = String::new();
    for cell in nb["cells"].as_array().into_iter().flatten() {
        for o in cell["outputs"].as_array().into_iter().flatten() {
            s.push_str(&output_text(o));
            s.push('\n');
        }
    }
    s
}

pub fn output_text(o: &Value) -> String {
    let join = |v: &Value| match v {
        Value::Array(a) => a.iter().filter_map(Value::as_str).collect::<String>(),
        Value::String(s) => s.clone(),
        _ => String::new(),
    };
    match o["output_type"].as_str() {
        Some("stream") => join(&o["text"]),
        Some("error") => format!(
            "ERROR {}: {}\n{}",
            join(&o["ename"]),
            join(&o["evalue"]),
            join(&o["traceback"])
        ),
        _ => {
            let d = &o["data"];
            format!("{}{}", join(&d["text/plain"]), join(&d["text/html"]))
        }
    }
}

/// The check report lines (`llm-lab check: name = status`) a notebook printed.
pub fn check_reports(nb: &Value) -> Vec<(String, String)> {
    tagged_lines(nb, REPORT_PREFIX)
}

/// Every `PREFIX name = value` line a notebook printed, as (name, value).
fn tagged_lines(nb: &Value, prefix: &str) -> Vec<(String, String)> {
    tagged_lines_in(&all_output_text(nb), prefix)
}

/// Every `PREFIX name = value` line of `text`, as (name, value), parsed as the library writes it.
pub fn tagged_lines_in(text: &str, prefix: &str) -> Vec<(String, String)> {
    let parse = if prefix == HINT_PREFIX {
        llm_lab_shared::protocol::parse_hint_line
    } else {
        llm_lab_shared::protocol::parse_report_line
    };
    text.lines().filter_map(parse).collect()
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Lesson,
    Solution,
    Exercise,
}

/// Problems in an executed notebook, judged by its kind.
pub fn problems(kind: Kind, nb: &Value) -> Vec<String> {
    let mut p = vec![];
    for (i, cell) in nb["cells"].as_array().into_iter().flatten().enumerate() {
        for o in cell["outputs"].as_array().into_iter().flatten() {
            let text = output_text(o);
            if o["output_type"] == "error" {
                p.push(format!(
                    "cell {i}: error output: {}",
                    text.lines().next().unwrap_or("")
                ));
            } else if kind != Kind::Exercise && text.contains("panicked at") {
                p.push(format!(
                    "cell {i}: a panic: {}",
                    text.lines().find(|l| l.contains("panicked")).unwrap_or("")
                ));
            } else if kind != Kind::Exercise && o["name"] == "stderr" && text.contains("Error") {
                p.push(format!(
                    "cell {i}: an error on stderr: {}",
                    text.lines().next().unwrap_or("")
                ));
            }
        }
    }
    // Solutions must pass every check; untouched exercises must report each as not done yet.
    let expected = match kind {
        Kind::Lesson => return p,
        Kind::Solution => "passed",
        Kind::Exercise => "not done yet",
    };
    let reports = check_reports(nb);
    if reports.is_empty() {
        p.push("no check ran".into());
    }
    for (name, status) in &reports {
        if status != expected {
            p.push(format!(
                "check {name} reports {status:?}, expected {expected:?}"
            ));
        }
    }
    p
}

pub fn list(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.extension().is_some_and(|x| x == "ipynb")
                && !p.file_name().unwrap().to_string_lossy().starts_with('.')
        })
        .collect();
    v.sort();
    Ok(v)
}

/// Executes every notebook of `kind` in `dir`, `jobs` at a time, each on a fresh kernel; returns
/// the problems found, in the notebooks' order. With `write_back`, the executed notebook replaces
/// the committed one (lessons and solutions keep their outputs).
pub fn run_all(
    lab: &Lab,
    dir: &Path,
    kind: Kind,
    write_back: bool,
    only: &[String],
    jobs: usize,
) -> Result<Vec<String>> {
    let notebooks: Vec<PathBuf> = list(dir)?
        .into_iter()
        .filter(|nb| {
            let name = nb.file_name().unwrap_or_default().to_string_lossy();
            only.is_empty() || only.iter().any(|o| name.contains(o.as_str()))
        })
        .collect();
    let jobs = jobs.clamp(1, notebooks.len().max(1));
    // Side by side, the kernels split the cores between them.
    let threads = (jobs > 1).then(|| {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        (cores / jobs).max(1)
    });
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut results: Vec<(usize, Result<Vec<String>>)> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..jobs)
            .map(|_| {
                s.spawn(|| {
                    let mut done = vec![];
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let Some(nb) = notebooks.get(i) else { break };
                        let r = run_one(lab, nb, kind, write_back, threads);
                        let stop = r.is_err();
                        done.push((i, r));
                        if stop {
                            break;
                        }
                    }
                    done
                })
            })
            .collect();
        workers
            .into_iter()
            .flat_map(|w| w.join().expect("a notebook worker panicked"))
            .collect()
    });
    results.sort_by_key(|(i, _)| *i);
    let mut all = vec![];
    for (_, r) in results {
        all.extend(r?);
    }
    Ok(all)
}

/// Runs one notebook: its problems (an error only when the run was interrupted).
fn run_one(
    lab: &Lab,
    nb: &Path,
    kind: Kind,
    write_back: bool,
    threads: Option<usize>,
) -> Result<Vec<String>> {
    let t = std::time::Instant::now();
    let rel = nb
        .strip_prefix(&lab.root)
        .unwrap_or(nb)
        .display()
        .to_string();
    let limits = Limits {
        threads,
        ..Limits::SETUP
    };
    let run = match execute(lab, nb, limits) {
        Err(e) if e.is::<crate::process::Interrupted>() => return Err(e),
        Err(e) => return Ok(vec![format!("{rel}: {e:#}")]),
        Ok(run) => run,
    };
    let mut p = problems(kind, &run.nb);
    if let Some(stop) = &run.stop {
        p.insert(0, format!("did not run to its end: {stop}"));
    }
    p.extend(run.timeouts.iter().map(|i| format!("cell {i}: timed out")));
    eprintln!(
        "    {rel}: {} in {:.0} s{}",
        if p.is_empty() { "ok" } else { "FAILED" },
        t.elapsed().as_secs_f64(),
        check_reports(&run.nb)
            .iter()
            .map(|(n, s)| format!("\n      {n}: {s}"))
            .collect::<String>()
    );
    if write_back && p.is_empty() {
        write(nb, &tidy(run.nb))?;
    }
    Ok(p.iter().map(|x| format!("{rel}: {x}")).collect())
}

/// Drops volatile metadata (execution timestamps) so that re-running changes only real outputs.
fn tidy(mut nb: Value) -> Value {
    for cell in nb["cells"].as_array_mut().into_iter().flatten() {
        if let Some(m) = cell["metadata"].as_object_mut() {
            m.remove("execution");
        }
    }
    nb["metadata"] = kernel_metadata();
    nb
}

/// The exercise generated from a solution notebook: solution regions become `todo!()`, outputs go.
pub fn exercise_from_solution(solution: &Value) -> Result<Value> {
    let mut nb = solution.clone();
    for cell in nb["cells"].as_array_mut().into_iter().flatten() {
        if cell["cell_type"] == "code" {
            let src = source_of(cell);
            let new = strip_solutions(&src)?;
            cell["source"] = json!(split_source(&new));
            cell["outputs"] = json!([]);
            cell["execution_count"] = Value::Null;
            if let Some(m) = cell["metadata"].as_object_mut() {
                m.remove("execution");
            }
        }
    }
    nb["metadata"] = kernel_metadata();
    Ok(nb)
}

/// Replaces each `// BEGIN SOLUTION` … `// END SOLUTION` block by `todo!()` at the same indentation.
pub fn strip_solutions(src: &str) -> Result<String> {
    let mut out = String::new();
    let mut inside = false;
    for line in src.split_inclusive('\n') {
        let t = line.trim();
        if t == BEGIN {
            if inside {
                bail!("nested {BEGIN}");
            }
            inside = true;
            let indent: String = line.chars().take_while(|c| c.is_whitespace()).collect();
            out.push_str(&format!("{indent}todo!()\n"));
        } else if t == END {
            if !inside {
                bail!("{END} without {BEGIN}");
            }
            inside = false;
        } else if !inside {
            out.push_str(line);
        }
    }
    if inside {
        bail!("{BEGIN} without {END}");
    }
    Ok(out)
}

/// `cargo xtask exercises [--check]`: (re)generate exercises/ from solutions/.
pub fn exercises(check: bool) -> Result<()> {
    let lab = Lab::new();
    let drift = sync_exercises(&lab, !check)?;
    if check && !drift.is_empty() {
        bail!(
            "exercises/ is out of date with solutions/ ({}); run `cargo xtask exercises`",
            drift.join(", ")
        );
    }
    Ok(())
}

/// Generates every exercise; returns the files that differed. Writes them when `write` is set.
pub fn sync_exercises(lab: &Lab, write_files: bool) -> Result<Vec<String>> {
    let (sol_dir, ex_dir) = (lab.root.join("solutions"), lab.root.join("exercises"));
    std::fs::create_dir_all(&ex_dir)?;
    let mut drift = vec![];
    let mut expected = vec![];
    for sol in list(&sol_dir)? {
        let name = sol.file_name().unwrap().to_owned();
        expected.push(name.clone());
        let target = ex_dir.join(&name);
        let generated = exercise_from_solution(&read(&sol)?)?;
        let current = read(&target).ok();
        if current.as_ref() != Some(&generated) {
            drift.push(
                target
                    .strip_prefix(&lab.root)
                    .unwrap_or(&target)
                    .display()
                    .to_string(),
            );
            if write_files {
                write(&target, &generated)?;
            }
        }
    }
    for ex in list(&ex_dir)? {
        if !expected.contains(&ex.file_name().unwrap().to_owned()) {
            drift.push(format!("{} has no solution", ex.display()));
        }
    }
    Ok(drift)
}

/// `cargo xtask notebooks [NAME…]`: re-execute lessons and solutions (those whose file name
/// contains one of the NAMEs, or all) and write their outputs back.
pub fn notebooks(names: &[String]) -> Result<()> {
    let lab = Lab::new();
    if !lab.is_ready() {
        crate::lab::setup()?;
    }
    let mut problems = vec![];
    for (dir, kind) in [("notebooks", Kind::Lesson), ("solutions", Kind::Solution)] {
        // One at a time: the committed outputs come from a kernel that has every core.
        problems.extend(run_all(&lab, &lab.root.join(dir), kind, true, names, 1)?);
    }
    sync_exercises(&lab, true)?;
    if !problems.is_empty() {
        bail!("{} problem(s):\n{}", problems.len(), problems.join("\n"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_llm_lab_portable_1_asks_for_the_portable_path() {
        assert!(is_portable(Some(std::ffi::OsStr::new("1"))));
        for other in [None, Some("0"), Some(""), Some("yes")] {
            assert!(!is_portable(other.map(std::ffi::OsStr::new)), "{other:?}");
        }
    }

    #[test]
    fn solution_regions_become_todo_at_their_indentation() {
        let src = "fn f(x: u32) -> u32 {\n    // BEGIN SOLUTION\n    x + 1\n    // END SOLUTION\n}\nprintln!(\"kept\");";
        assert_eq!(
            strip_solutions(src).unwrap(),
            "fn f(x: u32) -> u32 {\n    todo!()\n}\nprintln!(\"kept\");"
        );
        assert!(strip_solutions("// BEGIN SOLUTION\nx").is_err());
        assert!(strip_solutions("x\n// END SOLUTION\n").is_err());
        assert!(
            strip_solutions("// BEGIN SOLUTION\n// BEGIN SOLUTION\n// END SOLUTION\n").is_err()
        );
    }

    #[test]
    fn exercises_lose_outputs_and_solutions() {
        let mut sol = new_notebook(&[
            "fn f() -> u32 {\n    // BEGIN SOLUTION\n    42\n    // END SOLUTION\n}",
        ]);
        sol["cells"][0]["outputs"] =
            json!([{"output_type": "stream", "name": "stdout", "text": ["42"]}]);
        sol["cells"][0]["execution_count"] = json!(3);
        let ex = exercise_from_solution(&sol).unwrap();
        assert_eq!(
            source_of(&ex["cells"][0]),
            "fn f() -> u32 {\n    todo!()\n}"
        );
        assert_eq!(ex["cells"][0]["outputs"], json!([]));
        assert!(ex["cells"][0]["execution_count"].is_null());
    }

    fn executed(outputs: Value) -> Value {
        let mut nb = new_notebook(&["x"]);
        nb["cells"][0]["outputs"] = outputs;
        nb
    }

    fn stdout(text: &str) -> Value {
        json!({"output_type": "stream", "name": "stdout", "text": [text]})
    }

    #[test]
    fn judging_executed_notebooks() {
        let passed = executed(json!([stdout("llm-lab check: temperatura = passed\n")]));
        let todo = executed(json!([stdout(
            "llm-lab check: temperatura = not done yet\n"
        )]));
        let failed = executed(json!([stdout("llm-lab check: temperatura = failed\n")]));
        let panic = executed(
            json!([{"output_type": "stream", "name": "stderr", "text": ["thread panicked at src/lib.rs:1:1"]}]),
        );
        let error = executed(
            json!([{"output_type": "error", "ename": "Error", "evalue": "x", "traceback": []}]),
        );
        assert!(problems(Kind::Solution, &passed).is_empty());
        assert!(!problems(Kind::Solution, &todo).is_empty());
        assert!(!problems(Kind::Solution, &failed).is_empty());
        assert!(
            !problems(Kind::Solution, &executed(json!([]))).is_empty(),
            "a solution must run its checks"
        );
        assert!(problems(Kind::Exercise, &todo).is_empty());
        assert!(
            !problems(Kind::Exercise, &passed).is_empty(),
            "an untouched exercise cannot pass"
        );
        assert!(problems(Kind::Exercise, &executed(json!([stdout("llm-lab check: x = not done yet\n"), {"output_type": "stream", "name": "stderr", "text": ["panicked at"]}]))).is_empty());
        assert!(!problems(Kind::Lesson, &panic).is_empty());
        assert!(!problems(Kind::Lesson, &error).is_empty());
        assert!(problems(Kind::Lesson, &executed(json!([stdout("ok")]))).is_empty());
        assert_eq!(
            check_reports(&passed),
            vec![("temperatura".to_string(), "passed".to_string())]
        );
        // Reports after rich HTML outputs are still read, one per check.
        let html = json!({"output_type": "display_data", "data": {"text/html": ["<div>✅</div>"]}, "metadata": {}});
        let two = executed(json!([
            stdout("llm-lab check: a = passed"),
            html.clone(),
            stdout("llm-lab check: b = failed"),
            html
        ]));
        assert_eq!(check_reports(&two).len(), 2);
        assert!(!problems(Kind::Solution, &two).is_empty());
    }
}
