//! `cargo xtask test`: everything CI checks, in the order that fails fastest.

use std::process::Command;

use anyhow::{bail, Result};

use crate::cli::Args;

/// Runs a command, streaming its output, and fails if it fails.
pub fn run_step(what: &str, cmd: &mut Command) -> Result<()> {
    let t = std::time::Instant::now();
    eprintln!("==> {what}");
    let status = cmd.status().map_err(|e| anyhow::anyhow!("cannot start {what}: {e}"))?;
    eprintln!("<== {what}: {status} in {:.1} s", t.elapsed().as_secs_f64());
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

pub fn test(_args: &Args) -> Result<()> {
    // Fetch first, so the tests' own parallel first uses do not race on the download.
    run_step("fetch the models", Command::new(env!("CARGO")).args(["xtask", "fetch"]))?;
    run_step(
        "cargo test (library, doctests, xtask)",
        Command::new(env!("CARGO"))
            .args(["test", "--workspace", "--", "--test-threads", "2"])
            .env("CANDLE_NUM_THREADS", "1"),
    )?;
    Ok(())
}
