//! Child processes that leave nothing behind.
//!
//! A notebook run is a tree of processes: the Python executor, the Jupyter kernel (which
//! jupyter_client starts in a session of its own, out of our process group), evcxr's subprocess
//! that runs the student's code, and the compilers evcxr starts. A timed-out or interrupted run
//! must end all of them, or an infinite loop keeps a core busy after `check` has returned.
//! So the command runs in a process group of its own and carries a tag in its environment, which
//! every descendant inherits: on Linux, the processes that carry the tag are found in `/proc`
//! and killed, wherever they went.

use std::process::{Child, Command, ExitStatus};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

/// The environment variable that tags every process of one supervised run.
pub const TAG_VAR: &str = "LLM_LAB_RUN_TAG";

/// The error a command returns when the user pressed Ctrl-C or the process got SIGTERM/SIGHUP.
#[derive(Debug)]
pub struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted; every process it started was stopped")
    }
}

impl std::error::Error for Interrupted {}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: the one thing a signal handler may safely do here.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// From now on Ctrl-C, SIGTERM and SIGHUP set a flag instead of ending xtask at once, so that a
/// supervised run can stop its processes and remove its temporary folders before exiting.
pub fn catch_interrupts() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            unsafe {
                libc::signal(
                    sig,
                    on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t,
                );
            }
        }
    });
}

/// Whether an interrupt arrived since [`catch_interrupts`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// How a supervised command ended.
#[derive(Debug)]
pub enum Ended {
    Exited(ExitStatus),
    /// It ran past its time limit and was killed.
    TimedOut,
}

/// A command running in a process group of its own, tagged; everything it started is killed when
/// this value is dropped, on every path (return, error, interrupt).
pub struct Supervised {
    child: Child,
    tag: String,
    reaped: bool,
}

impl Supervised {
    /// Starts `cmd` in a new process group with a fresh tag in its environment.
    pub fn spawn(cmd: &mut Command) -> Result<Self> {
        catch_interrupts();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let tag = format!(
            "{}-{}-{nanos}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        cmd.env(TAG_VAR, &tag);
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(cmd, 0);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {:?}", cmd.get_program()))?;
        Ok(Supervised {
            child,
            tag,
            reaped: false,
        })
    }

    /// Waits for the command to end, at most `limit`; kills the whole tree on a timeout or an
    /// interrupt (then returns [`Interrupted`] as the error).
    pub fn wait(&mut self, limit: Duration) -> Result<Ended> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                self.reaped = true;
                self.kill_all();
                return Ok(Ended::Exited(status));
            }
            if interrupted() {
                self.kill_all();
                return Err(Interrupted.into());
            }
            if start.elapsed() >= limit {
                self.kill_all();
                return Ok(Ended::TimedOut);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process group, then every process that still carries the tag, then reaps.
    fn kill_all(&mut self) {
        #[cfg(unix)]
        if !self.reaped {
            if let Ok(pgid) = libc::pid_t::try_from(self.child.id()) {
                // SAFETY: plain system call; the group is ours (we made the child its leader).
                unsafe {
                    libc::killpg(pgid, libc::SIGKILL);
                }
            }
        }
        #[cfg(not(unix))]
        let _ = self.child.kill();
        // A process may fork while we kill: sweep until none is left (bounded).
        for _ in 0..20 {
            let left = tagged_processes(&self.tag);
            if left.is_empty() {
                break;
            }
            for pid in left {
                // SAFETY: plain system call on a process that carries our tag.
                #[cfg(unix)]
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if !self.reaped {
            let _ = self.child.wait();
            self.reaped = true;
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// Live processes (zombies have no environment left) whose environment holds `TAG_VAR=tag`.
#[cfg(target_os = "linux")]
pub fn tagged_processes(tag: &str) -> Vec<libc::pid_t> {
    processes_with_env(&format!("{TAG_VAR}={tag}"))
}

#[cfg(not(target_os = "linux"))]
pub fn tagged_processes(_tag: &str) -> Vec<i32> {
    vec![]
}

/// Processes, other than this one, whose initial environment holds the entry `key=value`.
#[cfg(target_os = "linux")]
pub fn processes_with_env(entry: &str) -> Vec<libc::pid_t> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|kv| kv == entry.as_bytes()))
        })
        .filter_map(|pid| libc::pid_t::try_from(pid).ok())
        .collect()
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn a_timed_out_tree_is_killed_even_outside_its_group() {
        // The inner shell leaves the process group (setsid), as Jupyter kernels do.
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "setsid sleep 600 & sleep 600"]);
        let mut run = Supervised::spawn(&mut cmd).unwrap();
        let tag = run.tag.clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        while tagged_processes(&tag).len() < 3 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(tagged_processes(&tag).len() >= 2, "the tree did not start");
        assert!(matches!(
            run.wait(Duration::from_millis(200)).unwrap(),
            Ended::TimedOut
        ));
        assert_eq!(tagged_processes(&tag), Vec::<libc::pid_t>::new());
    }

    #[test]
    fn a_finished_command_reports_its_status() {
        let mut run = Supervised::spawn(Command::new("sh").args(["-c", "exit 3"])).unwrap();
        match run.wait(Duration::from_secs(60)).unwrap() {
            Ended::Exited(s) => assert_eq!(s.code(), Some(3)),
            other => panic!("{other:?}"),
        }
    }
}
