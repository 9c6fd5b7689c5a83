//! `cargo xtask test`: everything CI checks, in the order that fails fastest.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Result};

use crate::cli::TestArgs;
use crate::lab::Lab;
use crate::notebooks::{self, Kind};

/// Runs a command, streaming its output, and fails if it fails.
pub fn run_step(what: &str, cmd: &mut Command) -> Result<()> {
    crate::lab::timed(what, || {
        let status = cmd
            .status()
            .map_err(|e| anyhow::anyhow!("cannot start {what}: {e}"))?;
        if !status.success() {
            bail!("{what} failed ({status})");
        }
        Ok(())
    })
}

pub fn test(args: &TestArgs) -> Result<()> {
    let total = Instant::now();
    let jobs = notebook_jobs()?;
    // Formatting first: it takes a second and fails the most often.
    run_step(
        "cargo fmt --all --check",
        Command::new(env!("CARGO")).args(["fmt", "--all", "--check"]),
    )?;
    // evcxr_jupyter (the kernel; minutes to compile on a new machine) builds beside the
    // workspace: each build ends in long single-crate compilations and links that leave the
    // other core idle, which the other build fills.
    let evcxr = (!args.no_notebooks && crate::lab::installed_evcxr().is_none())
        .then(|| std::thread::spawn(crate::lab::install_evcxr));
    let before_the_kernel = || -> Result<()> {
        // One build of the workspace serves every later step: the tests, the doctests' library
        // and the `llm-lab` binary (built for its own integration tests) share the dev
        // profile's dependencies, so the model commands below compile nothing again.
        run_step(
            "cargo test --workspace --no-run (the one build of candle and the course crate)",
            Command::new(env!("CARGO")).args(["test", "--workspace", "--no-run"]),
        )?;
        // Clippy after the build: its check of the dependencies reuses their build scripts
        // and procedural macros, and the lints of the course's own crates come on top (a
        // minute, where clippy first would compile every dependency for it alone).
        run_step(
            "cargo clippy --workspace --all-targets -- -D warnings",
            Command::new(env!("CARGO")).args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        )?;
        // Fetch before the tests, so the tests' own parallel first uses do not race on the
        // download.
        run_step(
            "fetch the models",
            Command::new(env!("CARGO")).args(["xtask", "fetch"]),
        )?;
        // The training benchmark's peer, which the `llm-lab` binary's tests train against.
        crate::peers::jax_python().map(|_| ())
    };
    let done = before_the_kernel();
    // Whatever happened, the kernel's build ends before this command does.
    if let Some(evcxr) = evcxr {
        evcxr
            .join()
            .map_err(|_| anyhow::anyhow!("the evcxr_jupyter build panicked"))??;
    }
    done?;
    // The kernel before the tests: xtask's own tests run `check` and `grade` on it (without it
    // they fail under CI=true, saying the lab is missing).
    let lab = Lab::new();
    if !args.no_notebooks && !lab.is_ready() {
        crate::lab::setup()?;
    }
    cargo_test()?;
    // The Linux-only accelerations (a kernel ends with a killed server; check's network
    // namespace) sit beside a portable path, which macOS takes: the launcher's and check's tests
    // run once more on it (the killed-server test aside: that guarantee is Linux's).
    run_step(
        "portable path (LLM_LAB_PORTABLE=1): the spare-kernel and check tests again",
        Command::new(env!("CARGO"))
            .args([
                "test", "-p", "xtask", "--test", "spare", "--test", "check", "--",
            ])
            .args(["--test-threads", "2", "--skip", "a_killed_server"])
            .env("LLM_LAB_PORTABLE", "1")
            .env("CANDLE_NUM_THREADS", "1"),
    )?;
    let lab = Lab::new();
    let drift = notebooks::sync_exercises(&lab, false)?;
    if !drift.is_empty() {
        bail!(
            "exercises/ is out of date with solutions/ ({}); run `cargo xtask exercises`",
            drift.join(", ")
        );
    }
    eprintln!("exercises/ matches solutions/");
    if args.no_notebooks {
        return Ok(());
    }
    let mut problems = committed_notebook_problems(&lab)?;
    for (dir, kind) in [
        ("notebooks", Kind::Lesson),
        ("solutions", Kind::Solution),
        ("exercises", Kind::Exercise),
    ] {
        // A notebook's problems fail the step and the others still run; a run that cannot go
        // on (interrupted, no kernel template) ends the test.
        let (mut found, mut ran) = (vec![], false);
        let step = crate::lab::timed(
            &format!("execute {dir}/ on the evcxr kernel, {jobs} at a time"),
            || {
                found = notebooks::run_all(&lab, &lab.root.join(dir), kind, false, &[], jobs)?;
                ran = true;
                if !found.is_empty() {
                    bail!("{} problem(s)", found.len());
                }
                Ok(())
            },
        );
        if !ran {
            step?;
        }
        problems.extend(found);
    }
    problems.extend(rendered_plot_problems(&lab)?);
    // After the notebooks: the lesson it opens has just run on the kernel, and the kernel's
    // compiled-crate cache is warm for the lesson it runs in the browser.
    if let Err(e) = crate::lab::timed("browser test (JupyterLab in headless Chromium)", || {
        crate::browser::browser(&crate::cli::BrowserArgs {
            explorer_only: false,
            run_timeout: 1200,
        })
    }) {
        problems.push(format!("browser test: {e:#}"));
    }
    let n_notebooks = ["notebooks", "solutions", "exercises"]
        .iter()
        .map(|d| {
            notebooks::list(&lab.root.join(d))
                .map(|v| v.len())
                .unwrap_or(0)
        })
        .sum::<usize>();
    println!(
        "notebooks: {} passed, {} failed",
        n_notebooks.saturating_sub(problems.len().min(n_notebooks)),
        problems.len()
    );
    eprintln!("test done in {:.0} s", total.elapsed().as_secs_f64());
    if !problems.is_empty() {
        bail!(
            "{} notebook problem(s):\n{}",
            problems.len(),
            problems.join("\n")
        );
    }
    Ok(())
}

/// How many notebooks run at once: two (each kernel spends most of its time in rustc and the
/// Python client, one core each), or `LLM_LAB_NOTEBOOK_JOBS` (1 to 16).
fn notebook_jobs() -> Result<usize> {
    match std::env::var("LLM_LAB_NOTEBOOK_JOBS") {
        Err(_) => Ok(2),
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if (1..=16).contains(&n) => Ok(n),
            _ => bail!("LLM_LAB_NOTEBOOK_JOBS is {v:?}: give a number of notebooks from 1 to 16"),
        },
    }
}

/// The variable naming the file where a test that skips for a missing prerequisite appends a line
/// (`llm_lab::testing::missing`, the xtask tests' `support::missing`).
pub const SKIPPED_LOG: &str = "LLM_LAB_SKIPPED_LOG";

/// `cargo test` of the workspace, its output shown as it comes, then one line that counts the
/// tests that passed, failed and skipped (a skipped test passes for libtest: it is counted apart,
/// and each is named).
fn cargo_test() -> Result<()> {
    use std::io::BufRead;
    let skipped_log = tempfile::NamedTempFile::new()?;
    crate::lab::timed("cargo test (library, doctests, xtask)", || {
        let mut child = Command::new(env!("CARGO"))
            .args(["test", "--workspace", "--", "--test-threads", "2"])
            .env("CANDLE_NUM_THREADS", "1")
            .env(SKIPPED_LOG, skipped_log.path())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start cargo test: {e}"))?;
        let stdout = child.stdout.take().expect("piped");
        let mut counts = TestCounts::default();
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line?;
            println!("{line}");
            counts.add(&line);
        }
        let status = child.wait()?;
        let mut skipped: Vec<String> = std::fs::read_to_string(skipped_log.path())?
            .lines()
            .map(str::to_string)
            .collect();
        skipped.sort();
        skipped.dedup();
        println!(
            "cargo test: {} passed, {} failed, {} skipped",
            counts.passed.saturating_sub(skipped.len()),
            counts.failed,
            skipped.len()
        );
        for s in &skipped {
            println!("    skipped: {s}");
        }
        if !status.success() {
            bail!("cargo test failed ({status})");
        }
        Ok(())
    })
}

/// libtest's results, summed over its `test result:` lines.
#[derive(Debug, Default, PartialEq)]
struct TestCounts {
    passed: usize,
    failed: usize,
}

impl TestCounts {
    fn add(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test result: ") else {
            return;
        };
        for part in rest.split(['.', ';']) {
            let mut words = part.split_whitespace();
            let (Some(n), Some(what)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<usize>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                _ => {}
            }
        }
    }
}

/// Committed lessons and solutions must read well on a forge: every code cell executed, no error.
fn committed_notebook_problems(lab: &Lab) -> Result<Vec<String>> {
    let mut p = vec![];
    for dir in ["notebooks", "solutions"] {
        for nb in notebooks::list(&lab.root.join(dir))? {
            let v = notebooks::read(&nb)?;
            let rel = format!("{dir}/{}", nb.file_name().unwrap().to_string_lossy());
            for (i, cell) in v["cells"].as_array().into_iter().flatten().enumerate() {
                if cell["cell_type"] != "code" {
                    continue;
                }
                if cell["execution_count"].is_null() {
                    p.push(format!(
                        "{rel}: cell {i} has no committed output; run `cargo xtask notebooks`"
                    ));
                    break;
                }
                if cell["outputs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|o| o["output_type"] == "error")
                {
                    p.push(format!("{rel}: cell {i} has a committed error output; fix it and run `cargo xtask notebooks`"));
                }
            }
        }
    }
    for nb in notebooks::list(&lab.root.join("exercises"))? {
        let v = notebooks::read(&nb)?;
        if v["cells"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["outputs"].as_array().is_some_and(|o| !o.is_empty()))
        {
            p.push(format!(
                "{}: exercises are committed without outputs; run `cargo xtask exercises`",
                nb.display()
            ));
        }
    }
    Ok(p)
}

/// Renders each committed lesson to HTML, as a reader sees it, and checks every plot survived.
fn rendered_plot_problems(lab: &Lab) -> Result<Vec<String>> {
    let mut p = vec![];
    let out_dir = tempfile::Builder::new().prefix("llm-lab-html-").tempdir()?;
    let out = out_dir.path();
    for nb in notebooks::list(&lab.root.join("notebooks"))? {
        let v = notebooks::read(&nb)?;
        // Live charts carry their SVG fallback as image/svg+xml, which nbconvert draws.
        let plots = notebooks::all_output_text(&v).matches("<svg").count() + svg_fallbacks(&v);
        let status = Command::new(lab.jupyter())
            .args([
                "nbconvert",
                "--to",
                "html",
                "--log-level",
                "WARN",
                "--output-dir",
            ])
            .arg(out)
            .arg(&nb)
            .status()?;
        let html = out.join(nb.with_extension("html").file_name().unwrap());
        let rendered = std::fs::read_to_string(&html).unwrap_or_default();
        // (The page's own stylesheet holds SVG data URIs too: count only images' sources.)
        let drawn =
            rendered.matches("<svg").count() + rendered.matches("src=\"data:image/svg+xml").count();
        let name = nb.file_name().unwrap().to_string_lossy().into_owned();
        if !status.success() || rendered.is_empty() {
            p.push(format!("{name}: could not be rendered to HTML"));
        } else if drawn < plots {
            p.push(format!(
                "{name}: {plots} plots in the outputs but only {drawn} in the rendered page"
            ));
        } else {
            eprintln!("    {name}: {plots} plot(s) rendered");
        }
    }
    Ok(p)
}

/// How many outputs carry an `image/svg+xml` picture (a live chart's static fallback): nbconvert
/// draws each as one `<img>` with an SVG data URI, however many `<svg>` it nests.
fn svg_fallbacks(nb: &serde_json::Value) -> usize {
    nb["cells"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|cell| cell["outputs"].as_array().into_iter().flatten())
        .filter(|o| !o["data"]["image/svg+xml"].is_null())
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_results_are_summed_over_the_binaries() {
        let mut c = TestCounts::default();
        for line in [
            "running 3 tests",
            "test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 3 filtered out; finished in 0.01s",
            "test a ... ok",
            "test result: FAILED. 4 passed; 2 failed; 0 ignored; 0 measured; 0 filtered out; finished in 9.50s",
            "test passed ... ok",
        ] {
            c.add(line);
        }
        assert_eq!(
            c,
            TestCounts {
                passed: 16,
                failed: 2
            }
        );
    }
}
