//! `cargo xtask ci-fresh`: `.ci/run` as a new machine meets it, timed step by step.
//!
//! A clean clone of the repository's committed HEAD, run with an empty home folder and an empty
//! CARGO_HOME (so no registry, no compiled crate, no evcxr, no pip or model cache), the toolchain
//! reused through RUSTUP_HOME and links to rustup's own binaries, no test user left over from an
//! earlier run, and `CI=true` (a missing prerequisite fails its test). Every line the run prints
//! is shown with the time since the start; at the end, a table of the steps (`==>`/`<==` lines)
//! and their times, also written to `steps.tsv` beside the log.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::cli::CiFreshArgs;

pub fn ci_fresh(args: &CiFreshArgs) -> Result<()> {
    let source = match &args.source {
        Some(s) => s.clone(),
        None => crate::lab::Lab::new().root,
    };
    let work = match &args.dir {
        Some(dir) => {
            if dir.exists() && std::fs::read_dir(dir)?.next().is_some() {
                bail!("{} is not empty: name a new or empty folder", dir.display());
            }
            std::fs::create_dir_all(dir)?;
            dir.clone()
        }
        None => tempfile::Builder::new()
            .prefix("llm-lab-ci-fresh-")
            .tempdir()?
            .keep(),
    };
    let work = std::fs::canonicalize(&work)?;
    // Open to the test users (traversal and reading, as a clone in a home folder would be).
    std::fs::set_permissions(&work, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    eprintln!("ci-fresh in {}", work.display());
    if args.keep_test_users {
        eprintln!("test users kept (--keep-test-users)");
    } else {
        remove_test_users()?;
    }
    let clone = work.join("llm-lab");
    let status = Command::new("git")
        .args(["clone", "--quiet", "--no-hardlinks"])
        .arg(&source)
        .arg(&clone)
        .status()
        .context("cannot run git")?;
    if !status.success() {
        bail!("git clone {} failed", source.display());
    }
    let home = work.join("home");
    let cargo_bin = home.join(".cargo").join("bin");
    std::fs::create_dir_all(&cargo_bin)?;
    let linked = link_toolchain(&cargo_bin)?;
    eprintln!(
        "toolchain: {} ({})",
        linked.join(", "),
        rustup_home().display()
    );
    let mut cmd = Command::new(clone.join(".ci").join("run"));
    cmd.current_dir(&clone)
        .env_clear()
        .env("HOME", &home)
        .env("CARGO_HOME", home.join(".cargo"))
        .env("RUSTUP_HOME", rustup_home())
        .env("PATH", fresh_path(&cargo_bin))
        .env("CI", "true");
    // Where the machine's Python comes from (pyenv finds its versions from PYENV_ROOT, which
    // would otherwise move with HOME), the locale, and who runs: kept.
    for keep in ["PYENV_ROOT", "LANG", "LC_ALL", "USER", "LOGNAME", "TERM"] {
        if let Some(v) = std::env::var_os(keep) {
            cmd.env(keep, v);
        }
    }
    let log_path = work.join("ci.log");
    let ok = run_logged(&mut cmd, &log_path)?;
    let steps = steps(&std::fs::read_to_string(&log_path)?);
    let table = table(&steps);
    std::fs::write(work.join("steps.tsv"), tsv(&steps))?;
    println!("{table}");
    println!("log: {}", log_path.display());
    if !ok {
        bail!(
            ".ci/run failed on the fresh clone (log: {})",
            log_path.display()
        );
    }
    Ok(())
}

/// Removes every system user an earlier test run left (`llmlab-…`), each once no test holds it.
fn remove_test_users() -> Result<()> {
    if !crate::lab::running_as_root() {
        eprintln!("not root: test users (if any) are left as they are");
        return Ok(());
    }
    for user in crate::test_users::existing() {
        crate::test_users::remove(&user).map_err(anyhow::Error::msg)?;
        eprintln!("removed the test user {user}");
    }
    Ok(())
}

/// rustup's folder of toolchains: reused, never written.
fn rustup_home() -> PathBuf {
    std::env::var_os("RUSTUP_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".rustup")))
        .unwrap_or_else(|| PathBuf::from(".rustup"))
}

/// Links rustup's proxies (cargo, rustc, clippy-driver, …: the same file as `rustup` itself)
/// into `bin`; nothing else of the machine's cargo bin folder (an installed evcxr, say).
fn link_toolchain(bin: &Path) -> Result<Vec<String>> {
    use std::os::unix::fs::MetadataExt;
    let rustup = crate::lab::which("rustup")
        .context("rustup is not on PATH: ci-fresh reuses the machine's toolchain through rustup")?;
    let rustup = std::fs::canonicalize(rustup)?;
    let id = std::fs::metadata(&rustup)?;
    let dir = rustup.parent().context("rustup's folder")?;
    let mut linked = vec![];
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(meta) = std::fs::metadata(entry.path()) else {
            continue;
        };
        let same = (meta.dev(), meta.ino()) == (id.dev(), id.ino())
            || std::fs::canonicalize(entry.path()).is_ok_and(|p| p == rustup);
        if same {
            std::os::unix::fs::symlink(&rustup, bin.join(entry.file_name()))?;
            linked.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    linked.sort();
    if !linked.iter().any(|n| n == "cargo") {
        bail!("no cargo proxy beside {}", rustup.display());
    }
    Ok(linked)
}

/// PATH with the new cargo bin folder first and the machine's cargo bin folders left out.
fn fresh_path(cargo_bin: &Path) -> std::ffi::OsString {
    let old_cargo_bins: Vec<PathBuf> = [
        std::env::var_os("CARGO_HOME").map(PathBuf::from),
        std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")),
    ]
    .into_iter()
    .flatten()
    .map(|h| h.join("bin"))
    .collect();
    let rest = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .filter(|d| !old_cargo_bins.contains(d));
    std::env::join_paths(std::iter::once(cargo_bin.to_path_buf()).chain(rest)).unwrap_or_default()
}

/// Runs `cmd` with its output and errors in one stream, each line shown and logged with the
/// time since the start; whether it succeeded.
fn run_logged(cmd: &mut Command, log_path: &Path) -> Result<bool> {
    let (reader, writer) = std::io::pipe()?;
    cmd.stdout(writer.try_clone()?).stderr(writer);
    let start = Instant::now();
    let mut child = cmd.spawn().context("cannot start .ci/run")?;
    // The pipe's writing ends now live only in the child: the reader ends when it does.
    drop(std::mem::replace(cmd, Command::new("true")));
    let mut log = std::io::BufWriter::new(std::fs::File::create(log_path)?);
    for line in std::io::BufReader::new(reader).split(b'\n') {
        let line = String::from_utf8_lossy(&line?).into_owned();
        let stamped = format!("[{:>7.1}] {line}", start.elapsed().as_secs_f64());
        eprintln!("{stamped}");
        writeln!(log, "{stamped}")?;
    }
    let status = child.wait()?;
    writeln!(
        log,
        "[{:>7.1}] .ci/run ended: {status}",
        start.elapsed().as_secs_f64()
    )?;
    log.flush()?;
    Ok(status.success())
}

/// One step of the run: its name, when it started and how long it took (None: not finished).
#[derive(Debug, PartialEq)]
pub struct Step {
    pub name: String,
    pub start: f64,
    pub secs: Option<f64>,
    pub ok: bool,
}

/// The steps of a stamped log: each `==> NAME` to its `<== NAME: ok|FAILED in N s`; the time
/// before the first step (cargo compiling xtask) and the whole run as steps of their own.
pub fn steps(log: &str) -> Vec<Step> {
    let stamped = log.lines().filter_map(|l| {
        let (t, rest) = l.strip_prefix('[')?.split_once("] ")?;
        Some((t.trim().parse::<f64>().ok()?, rest))
    });
    let mut steps: Vec<Step> = vec![];
    let mut end = 0.0;
    for (t, line) in stamped {
        end = t;
        if let Some(name) = line.strip_prefix("==> ") {
            if steps.is_empty() && t > 0.0 {
                steps.push(Step {
                    name: "cargo compiles xtask".into(),
                    start: 0.0,
                    secs: Some(t),
                    ok: true,
                });
            }
            steps.push(Step {
                name: name.trim().into(),
                start: t,
                secs: None,
                ok: false,
            });
        } else if let Some(rest) = line.strip_prefix("<== ") {
            let Some((name, outcome)) = rest.rsplit_once(": ") else {
                continue;
            };
            if let Some(step) = steps
                .iter_mut()
                .rev()
                .find(|s| s.name == name.trim() && s.secs.is_none())
            {
                step.secs = Some(t - step.start);
                step.ok = outcome.starts_with("ok");
            }
        }
    }
    let ended_ok = log
        .lines()
        .any(|l| l.ends_with(".ci/run ended: exit status: 0"));
    steps.push(Step {
        name: "total".into(),
        start: 0.0,
        secs: Some(end),
        ok: ended_ok,
    });
    steps
}

fn minutes(secs: f64) -> String {
    format!("{}:{:02}", (secs / 60.0) as u64, (secs % 60.0) as u64)
}

/// The steps as a Markdown table (the closing notes' format).
pub fn table(steps: &[Step]) -> String {
    let mut out = String::from("| step | time (m:ss) | s |\n|---|---|---|\n");
    for s in steps {
        let (time, secs) = match s.secs {
            Some(x) => (minutes(x), format!("{x:.0}")),
            None => ("did not end".into(), "".into()),
        };
        let mark = if s.ok || s.secs.is_none() {
            ""
        } else {
            " (FAILED)"
        };
        out.push_str(&format!("| {}{mark} | {time} | {secs} |\n", s.name));
    }
    out
}

fn tsv(steps: &[Step]) -> String {
    let mut out = String::from("step\tstart_s\tseconds\tok\n");
    for s in steps {
        let secs = s.secs.map(|x| format!("{x:.1}")).unwrap_or_default();
        out.push_str(&format!("{}\t{:.1}\t{secs}\t{}\n", s.name, s.start, s.ok));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_are_read_from_the_stamped_log_nested_and_unfinished_included() {
        let log = "\
[    0.5]    Compiling xtask v0.1.0
[   61.0] ==> cargo fmt --all --check
[   62.0] <== cargo fmt --all --check: ok in 1.0 s
[   62.0] ==> setup
[   63.0] ==> pip install
[  100.0] <== pip install: ok in 37.0 s
[  700.0] <== setup: FAILED in 638.0 s
[  701.0] ==> notebooks
[  900.0] error: boom
[  900.5] .ci/run ended: exit status: 1
";
        let s = steps(log);
        let names: Vec<&str> = s.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "cargo compiles xtask",
                "cargo fmt --all --check",
                "setup",
                "pip install",
                "notebooks",
                "total"
            ]
        );
        assert_eq!(s[0].secs, Some(61.0));
        assert_eq!(s[2].secs, Some(638.0));
        assert!(!s[2].ok);
        assert_eq!(s[3].secs, Some(37.0));
        assert_eq!(s[4].secs, None);
        assert_eq!(s[5].secs, Some(900.5));
        assert!(!s[5].ok, "the run failed");
        let t = table(&s);
        assert!(t.contains("| setup (FAILED) | 10:38 | 638 |"), "{t}");
        assert!(t.contains("| notebooks | did not end |"), "{t}");
        assert!(t.contains("| total (FAILED) | 15:00 | 900 |"), "{t}");
    }
}
