//! System users for the tests that run the lab as a normal user, made and removed without
//! races: each test names its own user, holds it under an exclusive lock while it runs, and
//! `useradd`/`userdel` run under one lock shared by every process (two at once fail to lock
//! /etc/passwd, or leave a home folder owned by a uid that no longer exists). Std and libc only:
//! the tests include this file, and `cargo xtask ci-fresh` removes the users before a run.

#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// Where the locks live: one folder for every process, whatever its TMPDIR.
const LOCKS: &str = "/tmp";

/// The prefix of every system user the tests make (`cargo xtask ci-fresh` removes them first).
pub const PREFIX: &str = "llmlab-";

/// A normal system user leased to one test: no other test, in this process or another, holds
/// the same user while this lease lives (an exclusive lock on a file named after the user).
pub struct TestUser {
    pub name: String,
    pub uid: u32,
    pub home: PathBuf,
    _lease: std::fs::File,
}

/// Locks `path` exclusively (waiting for whoever holds it), created if missing.
fn lock(path: &std::path::Path) -> Result<std::fs::File, String> {
    use std::os::fd::AsRawFd;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open the lock {}: {e}", path.display()))?;
    // SAFETY: a plain system call on a descriptor this function owns.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "cannot lock {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(file)
}

/// The user `llmlab-NAME` (each test names its own), made with `useradd --create-home` if it
/// does not exist, leased to the caller. `useradd` and `userdel` run under one lock shared by
/// every test process (two at once fail to lock /etc/passwd, or leave a home folder owned by a
/// uid that no longer exists); the user's home must belong to it, else the error says how to
/// remove the leftover. Needs root.
pub fn test_user(name: &str) -> Result<TestUser, String> {
    let user = format!("{PREFIX}{name}");
    let lease = lock(&std::path::Path::new(LOCKS).join(format!("{user}.lock")))?;
    {
        let _accounts = lock(&std::path::Path::new(LOCKS).join("llmlab-test-users.lock"))?;
        if passwd_entry(&user).is_none() {
            let made = Command::new("useradd")
                .args(["--create-home", "--user-group", "--shell", "/bin/sh"])
                .arg(&user)
                .output()
                .map_err(|e| format!("cannot run useradd ({e}): install Debian's passwd"))?;
            if !made.status.success() {
                return Err(format!(
                    "useradd {user} failed: {}",
                    String::from_utf8_lossy(&made.stderr).trim()
                ));
            }
        }
    }
    let (uid, home) =
        passwd_entry(&user).ok_or_else(|| format!("{user} was made but has no passwd entry"))?;
    let owner = std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata(&home).map_err(|e| format!("{user}'s home {}: {e}", home.display()))?,
    );
    if owner != uid {
        return Err(format!(
            "{user}'s home {} belongs to uid {owner}, not to {user} (uid {uid}): an earlier run \
             left it; remove it with `userdel --remove {user}`",
            home.display()
        ));
    }
    Ok(TestUser {
        name: user,
        uid,
        home,
        _lease: lease,
    })
}

/// Removes the user `llmlab-NAME` and its home, once no test holds it.
pub fn remove_test_user(name: &str) -> Result<(), String> {
    remove(&format!("{PREFIX}{name}"))
}

/// Every user the tests made (named `llmlab-…`).
pub fn existing() -> Vec<String> {
    let out = Command::new("getent").arg("passwd").output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    text.unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(':').next())
        .filter(|u| u.starts_with(PREFIX))
        .map(str::to_string)
        .collect()
}

/// Removes `user` and its home, once no test holds it.
pub fn remove(user: &str) -> Result<(), String> {
    let _lease = lock(&std::path::Path::new(LOCKS).join(format!("{user}.lock")))?;
    let _accounts = lock(&std::path::Path::new(LOCKS).join("llmlab-test-users.lock"))?;
    if passwd_entry(user).is_none() {
        return Ok(());
    }
    let out = Command::new("userdel")
        .args(["--remove", user])
        .output()
        .map_err(|e| format!("cannot run userdel: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "userdel --remove {user} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// The uid and home folder of `user`, from the system's user database.
fn passwd_entry(user: &str) -> Option<(u32, PathBuf)> {
    let out = Command::new("getent")
        .args(["passwd", user])
        .output()
        .ok()?;
    let line = String::from_utf8(out.stdout).ok()?;
    let fields: Vec<&str> = line.trim().split(':').collect();
    Some((fields.get(2)?.parse().ok()?, PathBuf::from(fields.get(5)?)))
}
