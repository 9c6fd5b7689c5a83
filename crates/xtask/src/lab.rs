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
/// Starts each kernel in a build folder of its own that outlives it (see the file).
const LAUNCHER: &str = include_str!("launch_kernel.py");
/// The name of the course's kernel in Jupyter (the notebooks' kernelspec names it too). Not
/// evcxr's own `rust`: a kernelspec `evcxr_jupyter --install` wrote in the user's folder would
/// hide the lab's, and evcxr rewrites a `rust` kernelspec found on JUPYTER_PATH at every start.
pub const KERNEL_NAME: &str = "llm-lab";
/// The name the lab's kernel had before, removed by setup.
const OLD_KERNEL_NAME: &str = "rust";
/// Warm spare kernels: the kernel provisioner that hands them to Jupyter, and the server
/// extension that warms one for the lessons as the lab starts (one Python module).
const SPARES: &str = include_str!("llm_lab_spares.py");
const SPARES_MODULE: &str = "llm_lab_spares";
/// The provisioner's name in the kernelspec and in the module's entry point.
pub const PROVISIONER: &str = "llm-lab-spares";
/// The module an older lab installed for its spares, removed by setup.
const OLD_SPARES_MODULE: &str = "llm_lab_warm_spares";
/// Marks a build folder whose warm-up finished (the launcher copies only such a template).
const READY: &str = ".llm-lab-ready";

/// What a spare kernel runs before a kernel takes it (see `llm_lab_spares.py`): the lessons'
/// setup cell, a `let` (the first one makes evcxr's rust-analyzer load the crate graph, which
/// `:dep` alone does not), an expression whose value is shown (the first one costs more than the
/// next), and `:clear`, which drops the variable again.
pub fn spare_warmup() -> [&'static str; 4] {
    [
        crate::notebooks::SETUP_CELL,
        "let mut __w = Rng::new(0);",
        "__w.next_u64() % 2",
        ":clear",
    ]
}

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

    /// The kernels' build folders: `slot-N` (one per kernel alive at once, kept between
    /// kernels) and `template` (warmed by setup, copied into every new folder).
    pub fn kernel_slots(&self) -> PathBuf {
        self.root.join(".lab").join("kernels")
    }

    /// The warmed build folder new kernels start from.
    pub fn template(&self) -> PathBuf {
        self.kernel_slots().join("template")
    }

    fn launcher(&self) -> PathBuf {
        self.root.join(".lab").join("launch_kernel.py")
    }

    /// Whether the template was warmed after the last change of the course crate (and the
    /// crate it shares with xtask) or its dependencies: else a kernel started from it compiles the course crate again.
    pub fn template_is_current(&self) -> bool {
        let Some(warmed) = modified(&self.template().join(READY)) else {
            return false;
        };
        let krate = self.root.join("crates").join("llm-lab");
        let shared = self.root.join("crates").join("llm-lab-shared");
        let newest = [
            newest_modified(&krate.join("src")),
            modified(&krate.join("Cargo.toml")),
            newest_modified(&shared.join("src")),
            modified(&shared.join("Cargo.toml")),
            modified(&self.root.join("Cargo.toml")),
            modified(&self.root.join("Cargo.lock")),
        ]
        .into_iter()
        .flatten()
        .max();
        newest.is_none_or(|n| n <= warmed)
    }

    fn kernel_dir(&self) -> PathBuf {
        self.venv
            .join("share")
            .join("jupyter")
            .join("kernels")
            .join(KERNEL_NAME)
    }

    /// Removes the lab's kernelspec of an older version, under the name evcxr uses too.
    fn remove_old_kernel(&self) -> Result<()> {
        let old = self.kernel_dir().with_file_name(OLD_KERNEL_NAME);
        let ours = std::fs::read_to_string(old.join("kernel.json"))
            .is_ok_and(|spec| spec.contains("launch_kernel.py"));
        if ours {
            std::fs::remove_dir_all(&old)
                .with_context(|| format!("cannot remove the old kernelspec {}", old.display()))?;
        }
        Ok(())
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
            && std::fs::read_to_string(self.launcher()).is_ok_and(|s| s == LAUNCHER)
            && self.template().join(READY).exists()
            && self.purelib().is_ok_and(|lib| {
                std::fs::read_to_string(lib.join(format!("{SPARES_MODULE}.py")))
                    .is_ok_and(|s| s == SPARES)
            })
            && evcxr_binary().is_some_and(|b| {
                evcxr_version(&b).as_deref() == Some(EVCXR_VERSION) && spec_is_current(&b)
            })
    }

    /// The Jupyter kernelspec of the course's Rust kernel.
    ///
    /// evcxr compiles every crate, dependencies included, with debug assertions and overflow
    /// checks on; in candle's and this crate's numeric loops they cost about 3× the run time of a
    /// forward pass. The launcher turns them off for the dependencies only (a cargo profile
    /// override beside the build folder): the student's own cells keep them.
    ///
    /// The kernel starts through the lab's launcher, which gives it a build folder of its own
    /// that the next kernel reuses (see `launch_kernel.py`). In the lab's server, the kernel
    /// provisioner `llm-lab-spares` hands out a warm spare kernel instead when one is there, and
    /// keeps one warming for the next kernel (see `llm_lab_spares.py`).
    pub fn kernel_spec(&self, evcxr: &Path) -> serde_json::Value {
        serde_json::json!({
            "argv": [self.python(), self.launcher(), self.kernel_slots(), evcxr, "{connection_file}"],
            "display_name": "Rust (llm-lab)",
            "language": "rust",
            "interrupt_mode": "message",
            "env": {
                "EVCXR_CONFIG_DIR": self.evcxr_config,
                "LLM_LAB_SPARE_WARMUP": serde_json::json!(spare_warmup()).to_string(),
            },
            "metadata": {
                "kernel_provisioner": { "provisioner_name": PROVISIONER, "config": {} },
            },
        })
    }

    /// Environment for a kernel that builds in `folder` (a new folder starts as a copy of the
    /// warmed template) instead of a slot of the pool.
    pub fn kernel_env(&self, cmd: &mut Command, folder: &Path) {
        cmd.env("EVCXR_CONFIG_DIR", &self.evcxr_config)
            .env("LLM_LAB_KERNEL_DIR", folder);
    }
}

fn modified(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// The newest modification time of the files under `dir`.
fn newest_modified(dir: &Path) -> Option<std::time::SystemTime> {
    let mut newest = modified(dir);
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_modified(&path)
        } else {
            modified(&path)
        };
        newest = newest.max(t);
    }
    newest
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
/// `pip install` of pinned `packages` (with `options`) into the environment of `python`,
/// unless `stamp` says this very list is installed; the list is written to `stamp` after.
pub fn pip_install_pinned(
    python: &Path,
    packages: &[&str],
    options: &[&str],
    stamp: &Path,
) -> Result<()> {
    if std::fs::read_to_string(stamp).is_ok_and(|s| s == packages.join("\n")) {
        eprintln!("    already installed");
        return Ok(());
    }
    run_step(
        "pip install",
        Command::new(python)
            .args([
                "-m",
                "pip",
                "install",
                "--disable-pip-version-check",
                "--quiet",
            ])
            .args(options)
            .args(packages),
    )?;
    std::fs::write(stamp, packages.join("\n"))?;
    Ok(())
}

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
        pip_install_pinned(&lab.python(), PYTHON_PACKAGES, &[], &lab.stamp())
    })?;
    let evcxr = install_evcxr()?;
    timed(
        "Rust kernel registered in .venv, with its launcher (a build folder per kernel, warm spares)",
        || {
            std::fs::create_dir_all(lab.kernel_dir())?;
            lab.remove_old_kernel()?;
            std::fs::create_dir_all(lab.kernel_slots())?;
            // Whole or not at all: a kernel may start while setup runs.
            let launcher = lab.launcher().with_extension("py.tmp");
            std::fs::write(&launcher, LAUNCHER)?;
            std::fs::rename(&launcher, lab.launcher())?;
            std::fs::write(
                lab.kernel_dir().join("kernel.json"),
                serde_json::to_string_pretty(&lab.kernel_spec(&evcxr))?,
            )?;
            std::fs::create_dir_all(&lab.evcxr_config)?;
            // evcxr's shared compiled-crate cache (`:cache`) breaks when two kernels compile at
            // once; each kernel's own build folder replaces it.
            match std::fs::remove_file(lab.evcxr_config.join("init.evcxr")) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e)?,
                _ => Ok(()),
            }
        },
    )?;
    timed(
        "Jupyter settings of the lab (no news pop-up; a spare kernel warms as it starts)",
        || lab.write_settings(),
    )?;
    timed(
        "warm the kernels' template build folder (a kernel fetches the models, then prints logits)",
        || {
            if lab.template_is_current() {
                eprintln!("    already warm for this version of the course crate");
                eprintln!("    (the models are fetched on first use; `cargo xtask fetch` fetches them now)");
                return Ok(());
            }
            let secs = warm(&lab)?;
            eprintln!("    the warm-up kernel printed its first logits after {secs:.1} s");
            Ok(())
        },
    )?;
    eprintln!("setup done in {:.0} s", total.elapsed().as_secs_f64());
    eprintln!("(`cargo xtask bench-notebook` times a new kernel, a restart and a trivial cell)");
    Ok(())
}

/// Installs evcxr_jupyter (the pinned version) unless it is there; its binary.
pub fn install_evcxr() -> Result<PathBuf> {
    timed(&format!("evcxr_jupyter {EVCXR_VERSION}"), || {
        if let Some(b) = installed_evcxr() {
            eprintln!("    already installed: {}", b.display());
            return Ok(b);
        }
        eprintln!("    building it from crates.io (about 7 to 11 minutes on 2 cores, once)");
        run_with_progress(
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
    })
}

/// The pinned evcxr_jupyter, if it is installed.
pub fn installed_evcxr() -> Option<PathBuf> {
    evcxr_binary().filter(|b| evcxr_version(b).as_deref() == Some(EVCXR_VERSION))
}

/// Runs `cmd`, showing each crate cargo compiles with a counter and the time so far instead of
/// a silent wait; on failure, the end of its output.
pub fn run_with_progress(what: &str, cmd: &mut Command) -> Result<()> {
    use std::io::BufRead;
    let t = Instant::now();
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start {what}: {e}"))?;
    let stderr = child.stderr.take().context("piped stderr")?;
    let (mut compiled, mut tail) = (0usize, std::collections::VecDeque::new());
    for line in std::io::BufReader::new(stderr).lines() {
        let line = line?;
        let trimmed = line.trim_start();
        if let Some(krate) = trimmed.strip_prefix("Compiling ") {
            compiled += 1;
            eprintln!(
                "    [{compiled:>3} crates, {:>4.0} s] {krate}",
                t.elapsed().as_secs_f64()
            );
        } else if trimmed.starts_with("error") || trimmed.starts_with("Installed") {
            eprintln!("    {trimmed}");
        }
        if tail.len() == 40 {
            tail.pop_front();
        }
        tail.push_back(line);
    }
    let status = child.wait()?;
    if !status.success() {
        let tail: Vec<String> = tail.into();
        bail!("{what} failed ({status}):\n{}", tail.join("\n"));
    }
    Ok(())
}

/// Counts the crates compiled so far in a kernel's build folder, every few seconds, until
/// `done`: the warm-up compiles candle for minutes on a new machine.
fn show_build_progress(folder: &Path, done: &std::sync::atomic::AtomicBool) {
    let started = Instant::now();
    let (mut last, mut next) = (0usize, started);
    while !done.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(200));
        if Instant::now() < next {
            continue;
        }
        next = Instant::now() + std::time::Duration::from_secs(5);
        let mut newest: Option<(std::time::SystemTime, String)> = None;
        let mut count = 0usize;
        let target = folder.join("target");
        let deps_dirs = std::fs::read_dir(&target)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("debug").join("deps"));
        for entry in deps_dirs.flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten()) {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(stem) = name
                .strip_suffix(".rlib")
                .or_else(|| name.strip_suffix(".so"))
                .and_then(|n| n.strip_prefix("lib"))
            else {
                continue;
            };
            count += 1;
            let t = entry.metadata().and_then(|m| m.modified()).ok();
            if let Some(t) = t.filter(|t| newest.as_ref().is_none_or(|(n, _)| t > n)) {
                let krate = stem.rsplit_once('-').map_or(stem, |(k, _)| k).to_string();
                newest = Some((t, krate));
            }
        }
        // The cell's own library comes and goes (evcxr renames it): only growth is progress.
        if count > last {
            last = count;
            eprintln!(
                "    [{count:>3} crates compiled, {:>4.0} s] latest: {}",
                started.elapsed().as_secs_f64(),
                newest.map(|(_, k)| k).unwrap_or_default()
            );
        }
    }
}

/// The warm-up's cell that fetches every model of the registry, naming each.
pub const FETCH_CELL: &str = "for m in models::registry() {\n    println!(\"model {}: {}\", m.name, models::fetch(m.name)?.display());\n}";

/// Runs a small notebook — the lessons' first cell, the models' fetch and a forward pass — on a
/// fresh kernel in the template build folder, which new kernels then start from, and returns its
/// wall time.
pub fn warm(lab: &Lab) -> Result<f64> {
    let cells = [
        crate::notebooks::SETUP_CELL,
        // The models, fetched by the course crate itself (xtask does not link it).
        FETCH_CELL,
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
    let template = lab.template();
    let done = std::sync::atomic::AtomicBool::new(false);
    let t = Instant::now();
    let run = std::thread::scope(|s| {
        s.spawn(|| show_build_progress(&template, &done));
        let run = crate::notebooks::execute_in(lab, placed.path(), Limits::SETUP, Some(&template));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        run
    })?;
    let secs = t.elapsed().as_secs_f64();
    let text = crate::notebooks::all_output_text(&run.nb);
    if let Some(stop) = &run.stop {
        bail!("the warm-up notebook did not run to its end: {stop}\n{text}");
    }
    if !text.contains("TokenProb") {
        bail!("the warm-up notebook ran but printed no logits:\n{text}");
    }
    std::fs::write(template.join(READY), format!("{secs:.1}\n"))?;
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

    /// The folder of the lab's Python packages (`site-packages` in `.venv`).
    pub fn purelib(&self) -> Result<PathBuf> {
        let out = Command::new(self.python())
            .args([
                "-c",
                "import sysconfig; print(sysconfig.get_path('purelib'))",
            ])
            .output()
            .context("cannot run the lab's Python")?;
        let purelib = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if purelib.is_empty() {
            bail!("the lab's Python names no folder for its packages");
        }
        Ok(PathBuf::from(purelib))
    }

    /// The lab's own Jupyter configuration, in `.venv`: JupyterLab's settings (no news pop-up),
    /// and the spares module (`llm_lab_spares.py`) installed as a package of the lab's Python
    /// whose entry point registers its kernel provisioner, and turned on as a server extension.
    pub fn write_settings(&self) -> Result<()> {
        write_shared(&self.settings_overrides(), SETTINGS_OVERRIDES)?;
        let purelib = self.purelib()?;
        let dist_info = purelib.join(format!("{SPARES_MODULE}-0.dist-info"));
        // What `pip install` of a one-module package writes: enough for importlib.metadata to
        // find the entry point, and for `pip uninstall llm-lab-spares` to remove it.
        let files = [
            (
                purelib.join(format!("{SPARES_MODULE}.py")),
                SPARES.to_string(),
            ),
            (
                dist_info.join("METADATA"),
                "Metadata-Version: 2.1\nName: llm-lab-spares\nVersion: 0\nSummary: warm spare \
                 kernels of the llm-lab course (written by cargo xtask setup)\n"
                    .to_string(),
            ),
            (
                dist_info.join("entry_points.txt"),
                format!(
                    "[jupyter_client.kernel_provisioners]\n{PROVISIONER} = \
                     {SPARES_MODULE}:SpareProvisioner\n"
                ),
            ),
            (
                dist_info.join("INSTALLER"),
                "cargo xtask setup\n".to_string(),
            ),
            (
                dist_info.join("RECORD"),
                format!(
                    "{SPARES_MODULE}.py,,\n{d}/METADATA,,\n{d}/entry_points.txt,,\n\
                     {d}/INSTALLER,,\n{d}/RECORD,,\n",
                    d = dist_info.file_name().unwrap_or_default().to_string_lossy()
                ),
            ),
        ];
        for (path, text) in &files {
            write_shared(path, text)?;
        }
        let config = self.venv.join("etc/jupyter/jupyter_server_config.d");
        let enable = serde_json::json!({
            "ServerApp": { "jpserver_extensions": { SPARES_MODULE: true } }
        });
        write_shared(
            &config.join(format!("{SPARES_MODULE}.json")),
            &serde_json::to_string_pretty(&enable)?,
        )?;
        // An older lab's spares extension.
        for old in [
            purelib.join(format!("{OLD_SPARES_MODULE}.py")),
            config.join(format!("{OLD_SPARES_MODULE}.json")),
        ] {
            match std::fs::remove_file(&old) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(e).with_context(|| format!("cannot remove {}", old.display()))?
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The first lesson, relative to the repository.
    pub fn first_lesson(&self) -> Option<String> {
        crate::notebooks::list(&self.root.join("notebooks"))
            .ok()
            .and_then(|v| v.into_iter().next())
            .and_then(|p| {
                p.strip_prefix(&self.root)
                    .ok()
                    .map(|r| r.to_string_lossy().into_owned())
            })
    }

    /// The page JupyterLab opens: the first lesson, else the README.
    fn first_page(&self) -> String {
        let page = self.first_lesson().unwrap_or_else(|| "README.md".into());
        format!("/lab/tree/{page}")
    }
}

/// Writes `text` to `path` unless it is there already, readable by every user of the lab.
fn write_shared(path: &Path, text: &str) -> Result<()> {
    let readable_by_all = |p: &Path| {
        #[cfg(unix)]
        return std::fs::metadata(p)
            .is_ok_and(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o004 != 0);
        #[cfg(not(unix))]
        true
    };
    if std::fs::read_to_string(path).is_ok_and(|s| s == text) && readable_by_all(path) {
        return Ok(());
    }
    let dir = path.parent().context("a file of the lab has a folder")?;
    std::fs::create_dir_all(dir)?;
    // Written whole then renamed: Jupyter never reads half a file.
    let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
    std::io::Write::write_all(&mut tmp, text.as_bytes())?;
    // tempfile makes it private (0600); JupyterLab may run as another user of the lab.
    #[cfg(unix)]
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// The first file named `name` in a folder of PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Whether xtask runs as root (containers, cloud VMs, Codespaces).
pub fn running_as_root() -> bool {
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
    if let Err(e) = lab.write_settings() {
        // A lab set up by another user (a classroom machine), older than this checkout.
        eprintln!(
            "warning: cannot write the lab's Jupyter settings into .venv ({e:#}); JupyterLab \
             starts with the ones there (the lab's owner updates them with `cargo xtask setup`)"
        );
    }
    let mut cmd = Command::new(lab.jupyter());
    cmd.arg("lab")
        .arg("--notebook-dir")
        .arg(&lab.root)
        .arg(format!("--LabApp.default_url={}", lab.first_page()))
        .current_dir(&lab.root);
    cmd.env("EVCXR_CONFIG_DIR", &lab.evcxr_config);
    if std::env::var_os("LLM_LAB_SPARE_KERNELS").is_some_and(|v| v == "0") {
        eprintln!("spare kernels: off (LLM_LAB_SPARE_KERNELS=0): every kernel starts cold");
    } else {
        eprintln!(
            "spare kernels: on (one starts warming for notebooks/ now; each notebook folder keeps \
             one kernel warmed for its next new kernel or restart; LLM_LAB_SPARE_KERNELS=0 turns \
             them off)"
        );
    }
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
    fn the_spares_module_names_the_labs_kernel_and_its_provisioner_class() {
        assert!(
            SPARES.contains(&format!("\nKERNEL = \"{KERNEL_NAME}\"\n")),
            "llm_lab_spares.py must name the kernel {KERNEL_NAME}"
        );
        assert!(SPARES.contains("\nclass SpareProvisioner(LocalProvisioner):\n"));
    }

    #[test]
    fn only_the_dependencies_lose_their_overflow_checks() {
        let spec = Lab::new().kernel_spec(Path::new("/usr/bin/evcxr_jupyter"));
        let env = spec["env"].as_object().unwrap();
        // A `CARGO_PROFILE_DEV_*` variable would reach the student's cells too.
        assert!(
            env.keys().all(|k| !k.starts_with("CARGO_PROFILE")),
            "{env:?}"
        );
        assert!(LAUNCHER.contains(
            "[profile.dev.package.\"*\"]\ndebug-assertions = false\noverflow-checks = false\n"
        ));
    }

    #[test]
    fn reads_evcxr_version_from_cargo_record() {
        let toml = "[v1]\n\"cargo-fuzz 0.12.0 (registry+https://github.com/rust-lang/crates.io-index)\" = [\"cargo-fuzz\"]\n\"evcxr_jupyter 0.22.0 (registry+https://github.com/rust-lang/crates.io-index)\" = [\"evcxr_jupyter\"]\n";
        assert_eq!(evcxr_in_crates_toml(toml).as_deref(), Some("0.22.0"));
        assert_eq!(evcxr_in_crates_toml("[v1]\n"), None);
    }
}
