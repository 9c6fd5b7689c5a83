//! The peers the benchmarks compare against, each installed in a virtual environment of its own
//! from pinned wheels on PyPI. PyPI's PyTorch for Linux (2.15) needs NVIDIA's CUDA packages to
//! import at all, so the training peer is JAX's CPU build.

use std::path::PathBuf;
use std::process::Command;

use anyhow::Result;

use crate::lab::{pip_install_pinned, timed, Lab};
use crate::test::run_step;

/// JAX on the CPU and optax (AdamW), pinned.
pub const JAX_PACKAGES: &[&str] = &["jax==0.10.2", "jaxlib==0.10.2", "optax==0.2.8"];

/// The Python of `.venv-jax`, made and filled on first use.
pub fn jax_python() -> Result<PathBuf> {
    let venv = Lab::new().root.join(".venv-jax");
    let python = venv.join("bin").join("python");
    let stamp = venv.join("llm-lab-packages");
    timed("JAX peer (.venv-jax, pinned wheels from PyPI)", || {
        if !python.exists() {
            run_step(
                "python3 -m venv",
                Command::new("python3").args(["-m", "venv"]).arg(&venv),
            )?;
        }
        pip_install_pinned(&python, JAX_PACKAGES, &["--only-binary", ":all:"], &stamp)
    })?;
    Ok(python)
}
