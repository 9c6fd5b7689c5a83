//! The notebook stack: a local Python environment with JupyterLab, the evcxr Rust kernel registered
//! into it, evcxr's compiled-crate cache, and headless execution of notebooks.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::cli::LabArgs;
use crate::notebooks::Limits;
use crate::test::run_step;

/// Pinned versions: the course must behave the same on every student's machine.
pub const PYTHON_PACKAGES: &[&str] = &[
    "jupyterlab==4.6.6",
    "nbclient==0.11.0",
    "nbconvert==7.17.2",
    "jupyter_client==8.10.0",
];
pub const EVCXR_VERSION: &str = "0.22.0";
/// evcxr's compiled-crate cache, in MiB: candle and friends need about 1 GiB.
const EVCXR_CACHE_MIB: u32 = 4096;

/// Paths of the lab inside the repository.
pub struct Lab {
    pub root: PathBuf,
    pub venv: PathBuf,
    pub evcxr_config: PathBuf,
}

impl Lab {
    pub fn new() -> Self {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .and_then(Path::parent)
            .expect("xtask lives in crates/xtask")
            .to_path_buf();
        Lab {
            venv: root.join(".venv"),
            evcxr_config: root.join(".lab").join("evcxr"),
            root,
        }
    }

    pub fn jupyter(&self) -> PathBuf {
        self.venv.join("bin").join("jupyter")
    }

    pub fn python(&self) -> PathBuf {
        self.venv.join("bin").join("python")
    }

    fn stamp(&self) -> PathBuf {
        self.venv.join(".llm-lab-packages")
    }

    fn kernel_dir(&self) -> PathBuf {
        self.venv
            .join("share")
            .join("jupyter")
            .join("kernels")
            .join("rust")
    }

    /// Whether everything `setup` installs is in place.
    pub fn is_ready(&self) -> bool {
        let spec_is_current = |evcxr: &Path| {
            std::fs::read_to_string(self.kernel_dir().join("kernel.json"))
                .ok()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
                .is_some_and(|v| v == self.kernel_spec(evcxr))
        };
        std::fs::read_to_string(self.stamp()).is_ok_and(|s| s == PYTHON_PACKAGES.join("\n"))
            && evcxr_binary().is_some_and(|b| {
                evcxr_version(&b).as_deref() == Some(EVCXR_VERSION) && spec_is_current(&b)
            })
    }

    /// The Jupyter kernelspec of the course's Rust kernel.
    ///
    /// evcxr compiles every crate, dependencies included, with debug assertions and overflow
    /// checks on; in candle's and this crate's numeric loops they cost about 3× the run time of a
    /// forward pass. The kernel turns them off (students' own code loses overflow panics too:
    /// cargo's environment settings apply to the whole build).
    pub fn kernel_spec(&self, evcxr: &Path) -> serde_json::Value {
        serde_json::json!({
            "argv": [evcxr, "--control_file", "{connection_file}"],
            "display_name": "Rust (llm-lab)",
            "language": "rust",
            "interrupt_mode": "message",
            "env": {
                "EVCXR_CONFIG_DIR": self.evcxr_config,
                "CARGO_PROFILE_DEV_DEBUG_ASSERTIONS": "false",
                "CARGO_PROFILE_DEV_OVERFLOW_CHECKS": "false",
            },
        })
    }

    /// Environment for a kernel that must not share evcxr's work folder with another one.
    pub fn kernel_env(&self, cmd: &mut Command, tmp: &Path) {
        cmd.env("EVCXR_CONFIG_DIR", &self.evcxr_config)
            .env("EVCXR_TMPDIR", tmp);
    }
}

fn cargo_bin_dir() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| dirs_home().join(".cargo"))
        .join("bin")
}

fn dirs_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/"))
}

pub fn evcxr_binary() -> Option<PathBuf> {
    let in_cargo = cargo_bin_dir().join("evcxr_jupyter");
    if in_cargo.exists() {
        return Some(in_cargo);
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("evcxr_jupyter"))
            .find(|p| p.exists())
    })
}

/// The version cargo installed (evcxr_jupyter has no `--version`); None for a binary cargo does not know.
fn evcxr_version(bin: &Path) -> Option<String> {
    let bin_dir = cargo_bin_dir();
    if bin.parent() != Some(bin_dir.as_path()) {
        return None;
    }
    // cargo's record of installed crates, read directly: `cargo install --list` takes cargo's
    // package lock, which a user sharing another's installation (read-only) cannot take.
    let recorded = bin_dir
        .parent()
        .and_then(|home| std::fs::read_to_string(home.join(".crates.toml")).ok())
        .and_then(|toml| evcxr_in_crates_toml(&toml));
    if recorded.is_some() {
        return recorded;
    }
    let out = Command::new(env!("CARGO"))
        .args(["install", "--list"])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("evcxr_jupyter v"))
        .map(|v| v.trim_end_matches(':').to_string())
}

/// The evcxr_jupyter version in cargo's `.crates.toml` (`"evcxr_jupyter 0.22.0 (registry+…)" = […]`).
fn evcxr_in_crates_toml(toml: &str) -> Option<String> {
    toml.lines().find_map(|l| {
        let rest = l.trim_start().strip_prefix("\"evcxr_jupyter ")?;
        rest.split_whitespace().next().map(str::to_string)
    })
}

/// Runs one step, announcing it and saying how long it took.
pub fn timed<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    let t = Instant::now();
    eprintln!("==> {what}");
    let r = f();
    eprintln!(
        "<== {what}: {} in {:.1} s",
        if r.is_ok() { "ok" } else { "FAILED" },
        t.elapsed().as_secs_f64()
    );
    r
}

/// `cargo xtask setup`: idempotent; each step says what it did and how long it took.
pub fn setup() -> Result<()> {
    let lab = Lab::new();
    let total = Instant::now();
    timed("python virtual environment (.venv)", || {
        if lab.python().exists() {
            eprintln!("    already there");
            return Ok(());
        }
        run_step(
            "python3 -m venv",
            Command::new("python3").args(["-m", "venv"]).arg(&lab.venv),
        )
    })?;
    timed("JupyterLab, nbclient, nbconvert (pinned)", || {
        if std::fs::read_to_string(lab.stamp()).is_ok_and(|s| s == PYTHON_PACKAGES.join("\n")) {
            eprintln!("    already installed");
            return Ok(());
        }
        run_step(
            "pip install",
            Command::new(lab.python())
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--quiet",
                ])
                .args(PYTHON_PACKAGES),
        )?;
        std::fs::write(lab.stamp(), PYTHON_PACKAGES.join("\n"))?;
        Ok(())
    })?;
    let evcxr = timed(&format!("evcxr_jupyter {EVCXR_VERSION}"), || {
        if let Some(b) =
            evcxr_binary().filter(|b| evcxr_version(b).as_deref() == Some(EVCXR_VERSION))
        {
            eprintln!("    already installed: {}", b.display());
            return Ok(b);
        }
        eprintln!("    building it from crates.io (about 20 minutes on 2 cores, once)");
        run_step(
            "cargo install evcxr_jupyter",
            Command::new(env!("CARGO")).args([
                "install",
                "evcxr_jupyter",
                "--locked",
                "--version",
                EVCXR_VERSION,
            ]),
        )?;
        evcxr_binary().context("evcxr_jupyter was installed but cannot be found in ~/.cargo/bin")
    })?;
    timed(
        "Rust kernel registered in .venv, evcxr cache configured",
        || {
            std::fs::create_dir_all(lab.kernel_dir())?;
            std::fs::write(
                lab.kernel_dir().join("kernel.json"),
                serde_json::to_string_pretty(&lab.kernel_spec(&evcxr))?,
            )?;
            std::fs::create_dir_all(&lab.evcxr_config)?;
            std::fs::write(
                lab.evcxr_config.join("init.evcxr"),
                format!(":cache {EVCXR_CACHE_MIB}\n"),
            )?;
            Ok(())
        },
    )?;
    timed("JupyterLab settings of the lab (no news pop-up)", || {
        lab.write_settings()
    })?;
    timed("models", || {
        for m in llm_lab::models::registry() {
            llm_lab::models::fetch(m.name)?;
        }
        Ok(())
    })?;
    let secs = timed(
        "warm evcxr's cache (a fresh kernel reaches the first logits)",
        || warm(&lab),
    )?;
    eprintln!(
        "setup done in {:.0} s; a fresh kernel printed its first logits after {secs:.1} s",
        total.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs a one-cell notebook — the lessons' first cell and a forward pass — on a fresh kernel and
/// returns its wall time.
pub fn warm(lab: &Lab) -> Result<f64> {
    let cells = [
        crate::notebooks::SETUP_CELL,
        "let model = Model::load_default()?;\nlet logits = model.logits(\"The capital of France is\")?;\nprintln!(\"{:?}\", logits.top_k(3));",
    ];
    // The notebook sits where lessons do, so its relative `:dep` path is the same; its file is
    // removed however this ends.
    std::fs::create_dir_all(lab.root.join("notebooks"))?;
    let placed = tempfile::Builder::new()
        .prefix(".warm-")
        .suffix(".ipynb")
        .tempfile_in(lab.root.join("notebooks"))?;
    std::fs::write(
        placed.path(),
        crate::notebooks::new_notebook(&cells).to_string(),
    )?;
    let t = Instant::now();
    let run = crate::notebooks::execute(lab, placed.path(), Limits::SETUP)?;
    let secs = t.elapsed().as_secs_f64();
    let text = crate::notebooks::all_output_text(&run.nb);
    if let Some(stop) = &run.stop {
        bail!("the warm-up notebook did not run to its end: {stop}\n{text}");
    }
    if !text.contains("TokenProb") {
        bail!("the warm-up notebook ran but printed no logits:\n{text}");
    }
    Ok(secs)
}

/// JupyterLab settings of this lab only, written into `.venv` (JupyterLab's application
/// settings folder), never into the user's own `~/.jupyter`: no "get notified about official
/// Jupyter news?" pop-up and no update check on a course machine.
pub const SETTINGS_OVERRIDES: &str = r#"{
  "@jupyterlab/apputils-extension:notification": {
    "checkForUpdates": false,
    "fetchNews": "false"
  }
}
"#;

impl Lab {
    /// `overrides.json` in the lab's own JupyterLab, see [`SETTINGS_OVERRIDES`].
    pub fn settings_overrides(&self) -> PathBuf {
        self.venv
            .join("share")
            .join("jupyter")
            .join("lab")
            .join("settings")
            .join("overrides.json")
    }

    fn write_settings(&self) -> Result<()> {
        let path = self.settings_overrides();
        let readable_by_all = |p: &Path| {
            #[cfg(unix)]
            return std::fs::metadata(p).is_ok_and(|m| {
                std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o004 != 0
            });
            #[cfg(not(unix))]
            true
        };
        if std::fs::read_to_string(&path).is_ok_and(|s| s == SETTINGS_OVERRIDES)
            && readable_by_all(&path)
        {
            return Ok(());
        }
        let dir = path.parent().context("settings path has a folder")?;
        std::fs::create_dir_all(dir)?;
        // Written whole then renamed: JupyterLab never reads half a file.
        let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
        std::io::Write::write_all(&mut tmp, SETTINGS_OVERRIDES.as_bytes())?;
        // tempfile makes it private (0600); JupyterLab may run as another user of the lab.
        #[cfg(unix)]
        std::fs::set_permissions(
            tmp.path(),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )?;
        tmp.persist(&path)?;
        Ok(())
    }

    /// The page JupyterLab opens: the first lesson, else the README.
    fn first_page(&self) -> String {
        let lesson = crate::notebooks::list(&self.root.join("notebooks"))
            .ok()
            .and_then(|v| v.into_iter().next())
            .and_then(|p| {
                p.strip_prefix(&self.root)
                    .ok()
                    .map(|r| r.to_string_lossy().into_owned())
            });
        format!("/lab/tree/{}", lesson.unwrap_or_else(|| "README.md".into()))
    }
}

/// Whether xtask runs as root (containers, cloud VMs, Codespaces).
fn running_as_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    #[cfg(unix)]
    return unsafe { libc::geteuid() } == 0;
    #[cfg(not(unix))]
    false
}

/// `cargo xtask lab`: setup when needed, then JupyterLab on the repository, opened on the first
/// lesson.
pub fn lab(args: &LabArgs) -> Result<()> {
    let lab = Lab::new();
    if !lab.is_ready() {
        setup()?;
    }
    lab.write_settings()
        .context("cannot write the lab's JupyterLab settings into .venv")?;
    let mut cmd = Command::new(lab.jupyter());
    cmd.arg("lab")
        .arg("--notebook-dir")
        .arg(&lab.root)
        .arg(format!("--LabApp.default_url={}", lab.first_page()))
        .current_dir(&lab.root);
    cmd.env("EVCXR_CONFIG_DIR", &lab.evcxr_config);
    if running_as_root() {
        eprintln!("running as root: passing --allow-root to JupyterLab");
        cmd.arg("--allow-root");
    }
    if let Some(port) = args.port {
        cmd.arg(format!("--port={port}"));
    }
    if args.no_browser {
        cmd.arg("--no-browser");
    }
    let status = cmd
        .status()
        .context("cannot start JupyterLab; run `cargo xtask setup`")?;
    if !status.success() {
        bail!("JupyterLab exited with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_evcxr_version_from_cargo_record() {
        let toml = "[v1]\n\"cargo-fuzz 0.12.0 (registry+https://github.com/rust-lang/crates.io-index)\" = [\"cargo-fuzz\"]\n\"evcxr_jupyter 0.22.0 (registry+https://github.com/rust-lang/crates.io-index)\" = [\"evcxr_jupyter\"]\n";
        assert_eq!(evcxr_in_crates_toml(toml).as_deref(), Some("0.22.0"));
        assert_eq!(evcxr_in_crates_toml("[v1]\n"), None);
    }
}
