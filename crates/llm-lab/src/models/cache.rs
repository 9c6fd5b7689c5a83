//! The cache's bookkeeping: a stamp beside each verified file, one lock per cache folder, and the
//! removal of whatever an interrupted fetch left behind.
//!
//! A stamp records the sha256, size and modification time a file had when it was verified. While
//! size and time still match, the file is trusted without hashing it again (hashing Gemma's
//! 253 MB took 0.7 s here, at every model load without stamps); as soon as either changes, it is
//! hashed again, and removed if it no longer matches the registry.
//!
//! Every fetch holds the cache's lock for as long as it works there, so fetches into one cache run
//! one at a time, and any `.fetch-*` entry found by the lock's holder belongs to a fetch that
//! died (Ctrl-C, SIGKILL, power loss): the operating system releases a dead process's lock.

use std::fs::{File, Metadata, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::CachedFile;
use crate::error::{Error, Result};

/// Prefix of every temporary folder or file a fetch creates in the cache.
pub(crate) const WORK_PREFIX: &str = ".fetch-";
/// The lock file (its name does not start with [`WORK_PREFIX`], so it is never a leftover).
const LOCK_NAME: &str = ".fetch.lock";

/// What a file was like when it was last verified.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Stamp {
    sha256: String,
    size: u64,
    mtime_secs: u64,
    mtime_nanos: u32,
}

impl Stamp {
    fn of(meta: &Metadata, sha256: &str) -> Option<Stamp> {
        let mtime = meta.modified().ok()?.duration_since(UNIX_EPOCH).ok()?;
        Some(Stamp {
            sha256: sha256.to_string(),
            size: meta.len(),
            mtime_secs: mtime.as_secs(),
            mtime_nanos: mtime.subsec_nanos(),
        })
    }
}

/// Where the stamp of `file` lives: a hidden file beside it.
///
/// ```
/// use llm_lab::models::{spec, stamp_path};
/// let gemma = spec("gemma-3-270m")?;
/// let stamp = stamp_path(std::path::Path::new("/cache"), &gemma.file);
/// assert_eq!(stamp, std::path::Path::new("/cache/.gemma-3-270m-q4_k_m.gguf.verified"));
/// # Ok::<(), llm_lab::Error>(())
/// ```
pub fn stamp_path(cache: &Path, file: &CachedFile) -> PathBuf {
    cache.join(format!(".{}.verified", file.file_name))
}

/// True when `file` is in `cache` and its stamp still describes it. Reads two small things, hashes
/// nothing and takes no lock: the fast path of every fetch.
pub(crate) fn is_stamped(cache: &Path, file: &CachedFile) -> bool {
    let Ok(meta) = std::fs::metadata(cache.join(file.file_name)) else {
        return false;
    };
    let Ok(text) = std::fs::read_to_string(stamp_path(cache, file)) else {
        return false;
    };
    let Ok(stamp) = serde_json::from_str::<Stamp>(&text) else {
        return false;
    };
    meta.is_file() && Stamp::of(&meta, file.sha256).is_some_and(|s| s == stamp)
}

/// With the lock held: true when `file` is in `cache` and verified, hashing it (and stamping it)
/// if its stamp is missing or stale. A file that fails verification is removed, so that nothing
/// corrupt stays under its name, and the caller fetches it again.
pub(crate) fn verify_cached(cache: &Path, file: &CachedFile, _lock: &CacheLock) -> Result<bool> {
    if is_stamped(cache, file) {
        return Ok(true);
    }
    let path = cache.join(file.file_name);
    let stamp = stamp_path(cache, file);
    let meta = match std::fs::metadata(&path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            remove_if_present(&stamp)?;
            return Ok(false);
        }
        Err(e) => return Err(Error::io("cannot read", &path, e)),
    };
    if !meta.is_file() {
        return Err(Error::Fetch {
            what: file.file_name.to_string(),
            problem: format!(
                "`{}` is in the way and is not a file; remove it and run `cargo xtask fetch` again",
                path.display()
            ),
        });
    }
    let why = if stamp.exists() {
        "changed since it was last verified"
    } else {
        "was never verified by this version of llm-lab"
    };
    let Some(verdict) = mismatch(&path, file, why)? else {
        write_stamp(cache, file)?;
        return Ok(true);
    };
    eprintln!(
        "llm-lab: the cached {} {verdict}: removing it and fetching it again",
        path.display()
    );
    remove_if_present(&path)?;
    remove_if_present(&stamp)?;
    Ok(false)
}

/// Why the file at `path` is not `file` (its size, else its sha256), or `None` when it is. `why`
/// says, when the file has to be hashed, why that is needed.
fn mismatch(path: &Path, file: &CachedFile, why: &str) -> Result<Option<String>> {
    let size = std::fs::metadata(path)
        .map_err(|e| Error::io("cannot read", path, e))?
        .len();
    if size != file.size {
        return Ok(Some(format!("has {size} bytes instead of {}", file.size)));
    }
    eprintln!("llm-lab: {} {why}; checking its sha256…", path.display());
    let actual = super::sha256_file(path)?;
    Ok((actual != file.sha256).then(|| format!("has sha256 {actual} instead of {}", file.sha256)))
}

/// For a cache this process cannot lock (a read-only copy shared by a class): true when every
/// file is there and verified, hashing those whose stamps do not match; it changes nothing.
pub(crate) fn verify_read_only(cache: &Path, files: &[&CachedFile]) -> Result<bool> {
    for file in files {
        let path = cache.join(file.file_name);
        if is_stamped(cache, file) {
            continue;
        }
        if !path.is_file() || mismatch(&path, file, "cannot be stamped here")?.is_some() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Records that `file`, now in `cache`, was just verified. The stamp is written to a temporary
/// file and renamed, so a reader sees either no stamp or a whole one.
pub(crate) fn write_stamp(cache: &Path, file: &CachedFile) -> Result<()> {
    let path = cache.join(file.file_name);
    let meta = std::fs::metadata(&path).map_err(|e| Error::io("cannot read", &path, e))?;
    let stamp = stamp_path(cache, file);
    // A file system without modification times cannot be stamped: it is hashed at every fetch.
    let Some(record) = Stamp::of(&meta, file.sha256) else {
        return Ok(());
    };
    let json = serde_json::to_string(&record)
        .map_err(|e| Error::io("cannot write", &stamp, std::io::Error::other(e)))?;
    let mut tmp = new_file_in(cache, WORK_PREFIX)?;
    tmp.write_all(json.as_bytes())
        .map_err(|e| Error::io("cannot write", tmp.path(), e))?;
    tmp.persist(&stamp)
        .map_err(|e| Error::io("cannot write", &stamp, e.error))?;
    Ok(())
}

/// A temporary file in `dir` (random name after `prefix`) that is readable by all once renamed
/// into the cache, like any file a user creates: a shared cache may serve several accounts.
pub(crate) fn new_file_in(dir: &Path, prefix: &str) -> Result<tempfile::NamedTempFile> {
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
    builder
        .tempfile_in(dir)
        .map_err(|e| Error::io("cannot create a temporary file in", dir, e))
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io("cannot remove", path, e))
        }
        _ => Ok(()),
    }
}

/// Proof that this process is the only one fetching into a cache folder; released on drop (and by
/// the operating system if the process dies).
#[derive(Debug)]
pub(crate) struct CacheLock {
    _file: File,
}

/// Takes the lock of `cache` (which must exist), waiting for another fetch to finish if needed.
pub(crate) fn lock(cache: &Path) -> Result<CacheLock> {
    let (mut file, path) = open_lock(cache)?;
    match file.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            eprintln!(
                "llm-lab: another fetch (process {}) is working in {}; waiting for it to finish…",
                holder.trim(),
                cache.display()
            );
            file.lock()
                .map_err(|e| Error::io("cannot lock", &path, e))?;
        }
        Err(TryLockError::Error(e)) => return Err(Error::io("cannot lock", &path, e)),
    }
    Ok(claim(file))
}

/// The lock of `cache` if no other fetch holds it (waits at most a fifth of a second); never fails.
pub(crate) fn try_lock(cache: &Path) -> Option<CacheLock> {
    let (file, _) = open_lock(cache).ok()?;
    // A fetch holds the lock for seconds to minutes; a lock that another thread's child process
    // holds between its fork and its exec (a copy of a just-closed descriptor) for a moment
    // does not mean a fetch is running: a few tries over a fifth of a second tell them apart.
    for _ in 0..10 {
        if file.try_lock().is_ok() {
            return Some(claim(file));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    None
}

fn open_lock(cache: &Path) -> Result<(File, PathBuf)> {
    let path = cache.join(LOCK_NAME);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| Error::io("cannot open the cache's lock file", &path, e))?;
    Ok((file, path))
}

fn claim(mut file: File) -> CacheLock {
    // The pid only feeds the waiting message above: failing to write it changes nothing.
    let _ = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| write!(file, "{}", std::process::id()));
    CacheLock { _file: file }
}

/// With the lock held, removes every `.fetch-*` folder or file in `cache`: no fetch is running, so
/// they are what interrupted fetches left. One that cannot be removed is reported and skipped
/// (it is harmless, only wasted space).
pub(crate) fn remove_leftovers(cache: &Path, _lock: &CacheLock) {
    let Ok(entries) = std::fs::read_dir(cache) else {
        return;
    };
    let mut removed = 0;
    for entry in entries.filter_map(|e| e.ok()) {
        if !entry.file_name().to_string_lossy().starts_with(WORK_PREFIX) {
            continue;
        }
        let path = entry.path();
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        let result = if is_dir {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match result {
            Ok(()) => removed += 1,
            Err(e) => eprintln!(
                "llm-lab: cannot remove {}, left by an interrupted fetch ({e}); remove it by hand",
                path.display()
            ),
        }
    }
    if removed > 0 {
        eprintln!("llm-lab: removed {removed} leftover(s) of an interrupted fetch");
    }
}
