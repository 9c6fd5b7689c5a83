//! The peers the benchmarks compare against, each installed in a virtual environment of its own
//! from pinned wheels on PyPI. PyPI's PyTorch for Linux (2.15) needs NVIDIA's CUDA packages to
//! import at all, so the training peer is JAX's CPU build.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::lab::{timed, Lab};
use crate::test::run_step;

/// JAX on the CPU and optax (AdamW), pinned.
pub const JAX_PACKAGES: &[&str] = &["jax==0.10.2", "jaxlib==0.10.2", "optax==0.2.8"];

/// The Python of `.venv-jax`, made and filled on first use.
pub fn jax_python() -> Result<PathBuf> {
    let venv = Lab::new().root.join(".venv-jax");
    let python = venv.join("bin").join("python");
    let stamp = venv.join("llm-lab-packages");
    timed("JAX peer (.venv-jax, pinned wheels from PyPI)", || {
        if std::fs::read_to_string(&stamp).is_ok_and(|s| s == JAX_PACKAGES.join("\n")) {
            eprintln!("    already installed");
            return Ok(());
        }
        if !python.exists() {
            run_step(
                "python3 -m venv",
                Command::new("python3").args(["-m", "venv"]).arg(&venv),
            )?;
        }
        run_step(
            "pip install",
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--disable-pip-version-check",
                    "--quiet",
                    "--only-binary",
                    ":all:",
                ])
                .args(JAX_PACKAGES),
        )?;
        std::fs::write(&stamp, JAX_PACKAGES.join("\n"))?;
        Ok(())
    })?;
    Ok(python)
}
