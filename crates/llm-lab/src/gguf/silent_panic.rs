//! Running code that may panic inside a dependency (candle asserts on some corrupt inputs) with
//! the panic turned into a value and its message kept off the student's screen: the caller
//! reports its own clear error instead.

use std::cell::Cell;
use std::panic::{self, PanicHookInfo};
use std::sync::{Arc, Mutex};

type Hook = Box<dyn Fn(&PanicHookInfo<'_>) + Sync + Send + 'static>;

/// The panic hook is global: one swap at a time.
static SWAP: Mutex<()> = Mutex::new(());

thread_local! {
    static INSIDE: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`, returning `Err` with the panic's payload if it panics, and printing nothing for a
/// panic on this thread; panics on other threads still reach the previous hook, which is put back
/// afterwards.
pub(crate) fn catch_silently<R>(f: impl FnOnce() -> R) -> std::thread::Result<R> {
    if INSIDE.with(Cell::get) {
        // The silent hook is already in place for this thread.
        return panic::catch_unwind(panic::AssertUnwindSafe(f));
    }
    let _swap = SWAP.lock().unwrap_or_else(|e| e.into_inner());
    let previous: Arc<Hook> = Arc::new(panic::take_hook());
    let forward = Arc::clone(&previous);
    let me = std::thread::current().id();
    panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() != me {
            forward(info)
        }
    }));
    INSIDE.with(|c| c.set(true));
    let result = panic::catch_unwind(panic::AssertUnwindSafe(f));
    INSIDE.with(|c| c.set(false));
    drop(panic::take_hook());
    match Arc::try_unwrap(previous) {
        Ok(hook) => panic::set_hook(hook),
        Err(shared) => panic::set_hook(Box::new(move |info| shared(info))),
    }
    result
}

#[cfg(test)]
mod tests {
    use super::catch_silently;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    const CHILD: &str = "LLM_LAB_SILENT_PANIC_CHILD";

    /// In a child process (the hook is global, other tests must not see it): a caught panic
    /// prints nothing, and the hook installed before is back afterwards.
    #[test]
    fn caught_panics_are_silent_and_the_hook_is_restored() {
        if std::env::var_os(CHILD).is_some() {
            let seen = Arc::new(AtomicUsize::new(0));
            let counter = Arc::clone(&seen);
            std::panic::set_hook(Box::new(move |_| {
                counter.fetch_add(1, Ordering::SeqCst);
                eprintln!("previous hook ran");
            }));
            let r = catch_silently(|| -> u32 { panic!("deep inside candle") });
            assert!(r.is_err());
            assert_eq!(catch_silently(|| 7).unwrap(), 7);
            assert_eq!(
                seen.load(Ordering::SeqCst),
                0,
                "the silent hook let a panic through"
            );
            let _ = std::panic::catch_unwind(|| panic!("after"));
            assert_eq!(
                seen.load(Ordering::SeqCst),
                1,
                "the previous hook was not restored"
            );
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "gguf::silent_panic::tests::caught_panics_are_silent_and_the_hook_is_restored",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "child failed:\n{stdout}\n{stderr}");
        assert!(
            stdout.contains("1 passed"),
            "the child ran no test:\n{stdout}"
        );
        assert!(!stderr.contains("deep inside candle"), "{stderr}");
        assert_eq!(stderr.matches("previous hook ran").count(), 1, "{stderr}");
    }
}
