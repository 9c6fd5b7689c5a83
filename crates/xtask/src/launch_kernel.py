"""Starts the course's evcxr kernel in a build folder of its own (the kernelspec's command).

evcxr compiles every cell as a crate in a work folder (EVCXR_TMPDIR). By default that folder is
new for every kernel, so each kernel compiles the course crate again (half a minute), and the
compiled-crate cache that would spare the dependencies is shared by all kernels and breaks when
two compile at once. Here each kernel takes the first free folder of a pool (`slot-N`, a lock
held for the kernel's whole life, so two kernels never share one) and keeps it for the next
kernel: a restart finds everything compiled. A slot that does not exist yet starts as a copy of
the template that `cargo xtask setup` warmed, so even the first kernel of a notebook starts warm.

Warm spare kernels are not made here: the lab's Jupyter server starts them with this same
command ahead of time (see llm_lab_spares.py, its kernel provisioner).

usage: python launch_kernel.py SLOTS_DIR EVCXR_JUPYTER CONNECTION_FILE
LLM_LAB_KERNEL_DIR=PATH uses that folder (waiting for it to be free) instead of a pool slot: the
warm-up builds the template so, and notebook runs and benchmarks use it.
LLM_LAB_KERNEL_NICE=N starts the kernel at that niceness (a spare warming up; the provisioner
gives the priority back when it hands the spare out).
On Linux the kernel ends with the process that started it (the Jupyter server), even a killed
one; LLM_LAB_PORTABLE=1 turns that off, as on other systems, where the server ends its kernels
when it exits.
"""

import fcntl
import hashlib
import os
import shutil
import sys
import time

TEMPLATE = "template"
# Slots beyond this are not worth keeping: the kernel falls back to a folder of its own.
MAX_SLOTS = 32
# Written into a folder only once it is complete: a copy interrupted half-way is not used.
READY = ".llm-lab-ready"
# Dependencies (candle, the course crate) build without debug assertions and overflow checks: in
# candle's numeric loops they cost about 3x a forward pass. The notebook's own cells (evcxr's cell
# crate, the one workspace member) keep them, as Rust's debug builds do. Cargo reads this from
# the build folder's parent (evcxr rewrites the `.cargo/config.toml` of the build folder itself).
DEPS_PROFILE = """\
# Written by llm-lab's kernel launcher: the notebook's dependencies build without debug
# assertions and overflow checks (they cost about 3x a forward pass); its own cells keep them.
[profile.dev.package."*"]
debug-assertions = false
overflow-checks = false
"""


def log(text):
    print(f"llm-lab: {text}", file=sys.stderr, flush=True)


def lock(path, exclusive=True, wait=0.0):
    """An open file holding an flock on `path`, or None if it is taken past `wait` seconds."""
    try:
        f = open(path, "a")
    except PermissionError:
        # Another user's lab: a shared lock works on a file one can only read.
        f = open(path, "r")
    deadline = time.monotonic() + wait
    mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
    while True:
        try:
            fcntl.flock(f, mode | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if time.monotonic() >= deadline:
                f.close()
                return None
            time.sleep(0.1)


def seed(slots, folder):
    """Fills a new `folder` with a copy of the warmed template, if there is one."""
    if os.path.exists(os.path.join(folder, READY)):
        return
    template = os.path.join(slots, TEMPLATE)
    # Shared: several kernels may copy at once, but not while setup rebuilds the template.
    held = lock(os.path.join(slots, TEMPLATE + ".lock"), exclusive=False, wait=30)
    try:
        if held is None or not os.path.exists(os.path.join(template, READY)):
            os.makedirs(folder, exist_ok=True)
            return
        started = time.monotonic()
        partial = folder + ".partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
        # copy2 keeps modification times, which cargo compares to decide what is fresh.
        shutil.copytree(template, partial, symlinks=True, copy_function=copy_file)
        os.rename(partial, folder)
        log(f"build folder {folder} copied from the warmed template in "
            f"{time.monotonic() - started:.1f} s")
    finally:
        if held is not None:
            held.close()


def copy_file(src, dst):
    """copy2, except that a lock file its owner alone may read (rustc makes its incremental
    sessions' locks private) is copied as the empty file it is: another user's copy of a
    template set up by root would otherwise fail."""
    try:
        return shutil.copy2(src, dst)
    except PermissionError:
        if not src.endswith(".lock") or os.path.getsize(src) != 0:
            raise
        open(dst, "w").close()
        shutil.copystat(src, dst)
        return dst


def user_slots(slots):
    """The pool of a user who cannot write the lab's (a lab set up by another user)."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    digest = hashlib.sha256(os.path.abspath(slots).encode()).hexdigest()[:16]
    return os.path.join(cache, "llm-lab", "kernels", digest)


def pool_of(slots):
    """The folder this user's kernels take slots in."""
    if os.access(slots, os.W_OK):
        return slots
    pool = user_slots(slots)
    os.makedirs(pool, exist_ok=True)
    return pool


def write_deps_profile(parent):
    """Writes DEPS_PROFILE into `parent`/.cargo/config.toml (whole, then renamed) unless it is
    there."""
    path = os.path.join(parent, ".cargo", "config.toml")
    try:
        with open(path) as f:
            if f.read() == DEPS_PROFILE:
                return
    except OSError:
        pass
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(DEPS_PROFILE)
        os.replace(tmp, path)
    except OSError as e:
        log(f"cannot write {path} ({e}): dependencies build with overflow checks (slower)")


def take_folder(slots):
    """(folder, held lock) for this kernel, or (None, None) when every slot is busy."""
    folder, held = take_build_folder(slots)
    if folder is not None:
        write_deps_profile(os.path.dirname(folder))
    return folder, held


def take_build_folder(slots):
    forced = os.environ.get("LLM_LAB_KERNEL_DIR")
    if forced:
        folder = os.path.abspath(forced)
        os.makedirs(os.path.dirname(folder), exist_ok=True)
        # A restart: the kernel before may take a moment to release the folder.
        held = lock(folder.rstrip("/") + ".lock", wait=120)
        if held is None:
            sys.exit(f"llm-lab: the build folder {folder} stays in use by another kernel")
        if folder != os.path.join(os.path.abspath(slots), TEMPLATE):
            seed(slots, folder)
        else:
            os.makedirs(folder, exist_ok=True)
        return folder, held
    pool = pool_of(slots)
    for n in range(MAX_SLOTS):
        candidate = os.path.join(pool, f"slot-{n}")
        held = lock(candidate + ".lock")
        if held is not None:
            seed(slots, candidate)
            return candidate, held
    return None, None


def end_with_parent():
    """Linux only: the kernel gets SIGKILL when the process that started it ends, so a killed
    Jupyter server leaves no kernel (or spare) behind. Elsewhere the server's own exit ends them."""
    if not sys.platform.startswith("linux") or os.environ.get("LLM_LAB_PORTABLE") == "1":
        return
    try:
        import ctypes
        import signal

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass
    # Started by a Jupyter client (it names itself), which ended before the line above.
    parent = os.environ.get("JPY_PARENT_PID", "")
    if parent.isdigit() and os.getppid() != int(parent):
        sys.exit("llm-lab: the process that started this kernel is gone")


def main():
    slots, evcxr, connection = sys.argv[1:4]
    slots = os.path.abspath(slots)
    env = dict(os.environ)
    end_with_parent()
    nice = env.pop("LLM_LAB_KERNEL_NICE", "")
    if nice.isdigit():
        os.nice(int(nice))
    try:
        os.makedirs(slots, exist_ok=True)
    except OSError:
        pass
    try:
        folder, held = take_folder(slots)
    except OSError as e:
        log(f"no build folder of its own for this kernel ({e}); it compiles in a temporary one")
        folder = held = None
    if folder is not None:
        env["EVCXR_TMPDIR"] = folder
        # The lock is held as long as the kernel (and whatever inherits it) lives.
        os.set_inheritable(held.fileno(), True)
    # else: evcxr makes a temporary folder of its own (cold, but safe).
    os.execve(evcxr, [evcxr, "--control_file", connection], env)


if __name__ == "__main__":
    main()
