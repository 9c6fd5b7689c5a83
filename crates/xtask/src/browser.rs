//! `cargo xtask browser`: the course in a real browser. JupyterLab started by the course's own
//! command (`cargo xtask lab --no-browser`), driven in headless Chromium (Debian's, through
//! Playwright) by `browser_test.py`: the committed explorer lesson shows its live chart without a
//! re-run and its temperature slider redraws the bars; one lesson runs in the browser without
//! error output and with its plots. Screenshots stay in `target/browser/`.

use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cli::BrowserArgs;
use crate::lab::{timed, Lab};
use crate::process::{Ended, Supervised};

/// Pinned: the Python driver's API. Its own browser download is not used (nor reachable).
const PLAYWRIGHT: &str = "playwright==1.65.2";
const DRIVER: &str = include_str!("browser_test.py");
/// The lesson whose committed outputs hold the explorer.
const EXPLORER_LESSON: &str = "04_proximo_token";
/// The lesson run in the browser: attention plots, live and static.
const RUN_LESSON: &str = "01_atencao_multicabecas";
/// The whole browser session, lesson run included, at most.
const DRIVER_LIMIT: Duration = Duration::from_secs(40 * 60);

pub fn browser(args: &BrowserArgs) -> Result<()> {
    let total = Instant::now();
    let lab = Lab::new();
    let out = lab.root.join("target").join("browser");
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    for old in std::fs::read_dir(&out)?.flatten() {
        if old.path().extension().is_some_and(|e| e == "png") {
            std::fs::remove_file(old.path())?;
        }
    }
    let chromium = timed("find Chromium", chromium)?;
    let python = timed("Playwright (pinned, in target/browser/venv)", || {
        playwright(&lab, &out)
    })?;
    let explorer_nb = copy_lesson(&lab, EXPLORER_LESSON, false)?;
    let run_nb = if args.explorer_only {
        None
    } else {
        Some(copy_lesson(&lab, RUN_LESSON, true)?)
    };
    let port = free_port()?;
    let token = format!(
        "{:016x}",
        std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
    );
    // A fresh Jupyter data folder: an empty trust database, so the committed notebook opens as
    // a reader's does, not trusted.
    let data_dir = tempfile::Builder::new()
        .prefix("llm-lab-browser-")
        .tempdir()?;
    let log_path = out.join("jupyterlab.log");
    let log = std::fs::File::create(&log_path)?;
    // The README's command itself, through cargo (not this process's own file: a `cargo test` of
    // the workspace during `cargo xtask test` may have replaced it with a build of other features).
    let mut lab_cmd = Command::new(env!("CARGO"));
    lab_cmd
        .args(["xtask", "lab", "--no-browser", "--port", &port.to_string()])
        .current_dir(&lab.root)
        .env("JUPYTER_TOKEN", &token)
        .env("JUPYTER_DATA_DIR", data_dir.path())
        .stdout(log.try_clone()?)
        .stderr(log);
    eprintln!(
        "==> cargo xtask lab --no-browser --port {port} (log: {})",
        log_path.display()
    );
    let server = Supervised::spawn(&mut lab_cmd)?;
    let config = serde_json::json!({
        "url": format!("http://127.0.0.1:{port}"),
        "token": token,
        "chromium": chromium,
        "out_dir": out,
        "explorer_nb": relative(&lab, &explorer_nb),
        "run_nb": run_nb.as_ref().map(|p| relative(&lab, p)),
        "run_timeout": args.run_timeout,
        "server_log": log_path,
    });
    let config_path = data_dir.path().join("browser.json");
    std::fs::write(&config_path, serde_json::to_string(&config)?)?;
    let driver_path = data_dir.path().join("browser_test.py");
    std::fs::write(&driver_path, DRIVER)?;
    let mut driver = Supervised::spawn(Command::new(&python).arg(&driver_path).arg(&config_path))?;
    let ended = driver.wait(DRIVER_LIMIT)?;
    drop(server);
    let seconds = total.elapsed().as_secs_f64();
    match ended {
        Ended::Exited(s) if s.success() => {
            eprintln!(
                "browser test passed in {seconds:.0} s; screenshots in {}",
                out.display()
            );
            Ok(())
        }
        Ended::Exited(s) if s.code() == Some(3) => bail!(
            "Chromium ({}) could not start (see above); install Debian's `chromium` or set LLM_LAB_CHROMIUM",
            chromium.display()
        ),
        Ended::Exited(s) => bail!(
            "the browser test failed ({s}) after {seconds:.0} s; screenshots in {}, JupyterLab's log in {}",
            out.display(),
            log_path.display()
        ),
        Ended::TimedOut => bail!(
            "the browser test ran past {} min; JupyterLab's log in {}",
            DRIVER_LIMIT.as_secs() / 60,
            log_path.display()
        ),
    }
}

/// Chromium: `LLM_LAB_CHROMIUM`, else on the PATH, else (as root, on Debian) installed with apt.
fn chromium() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("LLM_LAB_CHROMIUM") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            bail!("LLM_LAB_CHROMIUM={} is not a file", p.display());
        }
        return check_starts(p);
    }
    let on_path =
        || crate::lab::which("chromium").or_else(|| crate::lab::which("chromium-browser"));
    if let Some(p) = on_path() {
        return check_starts(p);
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root && Path::new("/usr/bin/apt-get").exists() {
        eprintln!("    Chromium is missing: apt-get install -y chromium");
        let install = || {
            Command::new("apt-get")
                .args(["install", "-y", "--no-install-recommends", "chromium"])
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        if !install() {
            let _ = Command::new("apt-get").arg("update").status();
            install();
        }
        if let Some(p) = on_path() {
            return check_starts(p);
        }
    }
    bail!(
        "Chromium is not installed: install it (`sudo apt-get install -y chromium` on Debian/Ubuntu) \
         or set LLM_LAB_CHROMIUM to a Chromium binary"
    )
}

/// Fails loudly when the binary cannot even print its version.
fn check_starts(p: PathBuf) -> Result<PathBuf> {
    let out = Command::new(&p)
        .args(["--headless", "--no-sandbox", "--version"])
        .output()
        .with_context(|| format!("Chromium ({}) cannot start", p.display()))?;
    if !out.status.success() {
        bail!(
            "Chromium ({}) cannot start: {}",
            p.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    eprintln!("    {}", String::from_utf8_lossy(&out.stdout).trim());
    Ok(p)
}

/// A virtual environment of its own with Playwright pinned; reused while the pin is the same.
fn playwright(lab: &Lab, out: &Path) -> Result<PathBuf> {
    let venv = out.join("venv");
    let python = venv.join("bin").join("python");
    let stamp = venv.join(".llm-lab-playwright");
    if python.exists() && std::fs::read_to_string(&stamp).is_ok_and(|s| s == PLAYWRIGHT) {
        eprintln!("    already installed");
        return Ok(python);
    }
    let base = if lab.python().exists() {
        lab.python()
    } else {
        PathBuf::from("python3")
    };
    crate::test::run_step(
        "python -m venv target/browser/venv",
        Command::new(&base)
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )?;
    crate::test::run_step(
        &format!("pip install {PLAYWRIGHT}"),
        Command::new(&python).args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--quiet",
            PLAYWRIGHT,
        ]),
    )?;
    std::fs::write(&stamp, PLAYWRIGHT)?;
    Ok(python)
}

/// A copy of a lesson at the top of `target/`: one folder below the root like the lessons, so
/// its `:dep … path = "../crates/llm-lab"` holds, and whatever JupyterLab saves stays out of
/// the repository. `clear` drops the committed outputs (for the run in the browser).
fn copy_lesson(lab: &Lab, name: &str, clear: bool) -> Result<PathBuf> {
    let src = lab.root.join("notebooks").join(format!("{name}.ipynb"));
    let mut nb = crate::notebooks::read(&src)
        .with_context(|| format!("cannot read the lesson {}", src.display()))?;
    if clear {
        for cell in nb["cells"].as_array_mut().into_iter().flatten() {
            if cell["cell_type"] == "code" {
                cell["outputs"] = serde_json::json!([]);
                cell["execution_count"] = serde_json::Value::Null;
            }
        }
    }
    let dst = lab
        .root
        .join("target")
        .join(format!("browser-{name}.ipynb"));
    if clear {
        std::fs::write(&dst, serde_json::to_string_pretty(&nb)? + "\n")?;
    } else {
        // The committed bytes, unchanged: what a reader opens.
        std::fs::copy(&src, &dst)?;
    }
    Ok(dst)
}

fn relative(lab: &Lab, p: &Path) -> String {
    p.strip_prefix(&lab.root)
        .unwrap_or(p)
        .to_string_lossy()
        .into_owned()
}

/// A port nobody listens on now (JupyterLab takes the next one if it is taken meanwhile).
fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}
