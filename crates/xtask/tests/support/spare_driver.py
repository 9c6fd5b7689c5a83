"""Drives the course's kernel launcher with a temporary pool and kernelspec, for tests/spare.rs.

usage: python spare_driver.py SCENARIO WORKDIR OUT.json
The kernelspec `llm-lab-spare-test` (in WORKDIR/jupyter, found through JUPYTER_PATH) runs the
launcher on the pool WORKDIR/pool; kernels start in WORKDIR/work. Each scenario writes what it
saw to OUT.json for the test to judge; the test asserts, not this script.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import threading
import time

from jupyter_client.manager import start_new_kernel

KERNEL = "llm-lab-spare-test"
# The text of every stream message a client saw, whichever request it answered.
SEEN = []


def spare_ready(pool):
    """The unclaimed spare folders whose warm-up has finished."""
    return [os.path.dirname(p) for p in glob.glob(os.path.join(pool, "spares", "*", "ready"))
            if "." not in os.path.basename(os.path.dirname(p))]


def wait_ready(pool, limit=600):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        found = spare_ready(pool)
        if found:
            return found[0]
        time.sleep(0.2)
    # What the keepers said (they log to spares/KEY.log) and what is in the pool, for the report.
    logs = []
    for path in glob.glob(os.path.join(pool, "spares", "*.log")):
        with open(path, errors="replace") as f:
            logs.append(f.read()[-4000:])
    listing = sorted(os.listdir(os.path.join(pool, "spares"))) if os.path.isdir(
        os.path.join(pool, "spares")) else []
    raise TimeoutError(f"no spare became ready within {limit} s; spares/: {listing}; "
                       f"keeper logs: {logs}")


def prime(spec, watched):
    """Asks the launcher for a spare in this folder that ends with process `watched`."""
    python, launcher, slots, evcxr = spec["argv"][:4]
    env = dict(os.environ, **spec["env"])
    subprocess.run([python, launcher, slots, evcxr, "--spare", str(watched)], env=env,
                   check=True, timeout=60)


def start(env_extra=None):
    saved = dict(os.environ)
    os.environ.update(env_extra or {})
    try:
        return start_new_kernel(kernel_name=KERNEL, startup_timeout=300)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def kind(km):
    """'proxy' when the kernel process is the launcher serving a spare, else 'cold'."""
    pid = km.provisioner.process.pid
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        cmdline = f.read()
    return "proxy" if b"launch_kernel.py" in cmdline else "cold"


def run(kc, code, timeout=120):
    """Executes `code`; the reply's count and status, and the text of its outputs."""
    msg_id = kc.execute(code, store_history=True)
    out, errors = [], []
    deadline = time.monotonic() + timeout
    while True:
        msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
        t, c = msg["msg_type"], msg["content"]
        if t == "stream":
            SEEN.append(c["text"])
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if t == "stream":
            out.append(c["text"])
        elif t == "execute_result":
            out.append(c["data"].get("text/plain", ""))
        elif t == "execute_input":
            out_input = c["execution_count"]
        elif t == "error":
            errors.append(c["evalue"])
        elif t == "status" and c["execution_state"] == "idle":
            break
    while True:
        reply = kc.get_shell_msg(timeout=max(0.1, deadline - time.monotonic()))
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    return {"code": code, "count": reply["content"]["execution_count"],
            "input_count": out_input, "status": reply["content"]["status"],
            "output": "".join(out), "errors": errors}


def nice(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pid, limit=30):
    deadline = time.monotonic() + limit
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not alive(pid)


def claimed_info(pool):
    found = glob.glob(os.path.join(pool, "spares", "*.claimed-*", "info.json"))
    with open(found[0]) as f:
        return json.load(f), os.path.dirname(found[0])


def slot_locks_free(pool):
    import fcntl

    free = []
    for path in sorted(glob.glob(os.path.join(pool, "slot-*.lock"))):
        with open(path, "a") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                free.append(True)
            except BlockingIOError:
                free.append(False)
    return free


CELLS = ["let a = 40 + 2;", "a", 'println!("hi {}", a);', 'let b: u8 = "x";', ":vars"]


def scenario(name, spec, pool, result):
    kernels = []
    try:
        if name == "claimed":
            k0 = start({"LLM_LAB_SPARE_KERNELS": "0"})
            kernels.append(k0)
            prime(spec, os.getpid())
            result["ready"] = wait_ready(pool)
            with open(os.path.join(result["ready"], "info.json")) as f:
                waiting = json.load(f)["evcxr_pid"]
            result["nice"] = [nice(waiting)]
            k1 = start()
            kernels.append(k1)
            result["kinds"] = [kind(k0[0]), kind(k1[0])]
            result["cold"] = [run(k0[1], c) for c in CELLS]
            result["spare"] = [run(k1[1], c) for c in CELLS]
            result["nice"].append(nice(waiting))
            # The heartbeat passes through the proxy (the client pings every few seconds).
            time.sleep(4)
            result["beating"] = [k[1].hb_channel.is_beating() for k in (k0, k1)]
            info, folder = claimed_info(pool)
            k1[1].stop_channels()
            k1[0].shutdown_kernel(now=False)
            kernels.remove(k1)
            result["spare_evcxr_gone"] = wait_gone(info["evcxr_pid"])
            deadline = time.monotonic() + 10
            while os.path.exists(folder) and time.monotonic() < deadline:
                time.sleep(0.1)
            result["claimed_folder_removed"] = not os.path.exists(folder)
        elif name == "warming":
            # A warm-up that prints: the student must not see it.
            path = os.path.join(os.environ["JUPYTER_PATH"], "kernels", KERNEL, "kernel.json")
            # A long first cell (as the `:dep` cell is) that marks its end: Jupyter must get
            # its kernel before that, and the student's cells must wait for the `:clear`.
            done = os.path.abspath("warm-up-done")
            spec["env"]["LLM_LAB_SPARE_WARMUP"] = json.dumps(
                ['std::thread::sleep(std::time::Duration::from_secs(15)); '
                 'println!("warm-up output"); '
                 f'std::fs::write({json.dumps(done)}, "").unwrap();',
                 "let __w = 1;",
                 ":clear"])
            with open(path, "w") as f:
                json.dump(spec, f)
            k0 = start({"LLM_LAB_SPARE_KERNELS": "0"})
            kernels.append(k0)
            result["cold"] = [run(k0[1], c) for c in CELLS]
            prime(spec, os.getpid())
            deadline = time.monotonic() + 60
            spares = os.path.join(pool, "spares")
            while time.monotonic() < deadline and not [
                    n for n in os.listdir(spares)
                    if "." not in n and os.path.isdir(os.path.join(spares, n))]:
                time.sleep(0.05)
            del SEEN[:]
            k1 = start()
            kernels.append(k1)
            # start_new_kernel returns once the kernel answered kernel_info.
            result["ready_before_warm_up_ended"] = not os.path.exists(done)
            result["kernel_info"] = k1[1].kernel_info(reply=True, timeout=30)["content"]
            info, folder = claimed_info(pool)
            result["kinds"] = [kind(k1[0])]
            result["spare"] = [run(k1[1], c) for c in CELLS]
            result["claimed_folder_ready"] = os.path.exists(os.path.join(folder, "ready"))
            result["warm_up_ended"] = os.path.exists(done)
            with open(os.path.join(folder, "warmed")) as f:
                result["warm_up_cells_run"] = f.read().strip()
            # Once the warm-up is over, kernel_info comes from evcxr itself again.
            result["kernel_info_after"] = k1[1].kernel_info(reply=True, timeout=30)["content"]
            result["seen"] = list(SEEN)
        elif name == "race":
            prime(spec, os.getpid())
            wait_ready(pool)
            started = [None, None]

            def go(i):
                started[i] = start()

            threads = [threading.Thread(target=go, args=(i,)) for i in range(2)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            kernels.extend(k for k in started if k is not None)
            result["kinds"] = sorted(kind(k[0]) for k in started)
            result["answers"] = [run(k[1], "1 + 1")["output"] for k in started]
        elif name == "kill":
            prime(spec, os.getpid())
            wait_ready(pool)
            k1 = start()
            kernels.append(k1)
            result["kinds"] = [kind(k1[0])]
            info, folder = claimed_info(pool)
            result["before"] = alive(info["evcxr_pid"])
            os.kill(k1[0].provisioner.process.pid, signal.SIGKILL)
            result["spare_evcxr_gone"] = wait_gone(info["evcxr_pid"])
            time.sleep(1)
            result["claimed_folder_removed"] = not os.path.exists(folder)
            result["slot_locks_free"] = slot_locks_free(pool)
        elif name == "watched":
            sleeper = subprocess.Popen(["sleep", "600"])
            try:
                prime(spec, sleeper.pid)
                folder = wait_ready(pool)
                with open(os.path.join(folder, "info.json")) as f:
                    info = json.load(f)
                result["before"] = [alive(info["keeper_pid"]), alive(info["evcxr_pid"])]
                sleeper.kill()
                sleeper.wait()
                result["keeper_gone"] = wait_gone(info["keeper_pid"])
                result["evcxr_gone"] = wait_gone(info["evcxr_pid"])
                result["folder_removed"] = not os.path.exists(folder)
                result["slot_locks_free"] = slot_locks_free(pool)
            finally:
                sleeper.kill()
        elif name == "interrupt":
            prime(spec, os.getpid())
            wait_ready(pool)
            k1 = start()
            kernels.append(k1)
            km, kc = k1
            result["kinds"] = [kind(km)]
            msg_id = kc.execute("std::thread::sleep(std::time::Duration::from_secs(60));")
            # The cell is compiled and running after its execute_input and a moment.
            time.sleep(5)
            t = time.monotonic()
            km.interrupt_kernel()
            reply = None
            while reply is None:
                m = kc.get_shell_msg(timeout=50)
                if m["parent_header"].get("msg_id") == msg_id:
                    reply = m
            result["interrupted_after"] = time.monotonic() - t
            result["status"] = reply["content"]["status"]
            result["after"] = run(kc, "1 + 1")
        elif name == "tidy":
            # Folders that keepers killed by SIGKILL left behind, and a spare nobody claims.
            dead = subprocess.Popen(["true"])
            dead.wait()
            spares = os.path.join(pool, "spares")
            stale = [os.path.join(spares, f"0123.new-{dead.pid}"),
                     os.path.join(spares, f".gone-{dead.pid}-abcd"),
                     os.path.join(spares, "4567.claimed-1-abcd")]
            for folder in stale:
                os.makedirs(folder)
            # A key last used three days ago, and one used now.
            old_key, new_key = os.path.join(spares, "89ab"), os.path.join(spares, "cdef")
            for f in (old_key + ".lock", old_key + ".log", new_key + ".lock", new_key + ".log"):
                open(f, "w").close()
            three_days = time.time() - 3 * 24 * 3600
            os.utime(old_key + ".lock", (three_days, three_days))
            with open(os.path.join(stale[2], "info.json"), "w") as f:
                json.dump({"keeper_pid": dead.pid, "keeper_start": 1}, f)
            spec = dict(spec, env=dict(spec["env"], LLM_LAB_SPARE_MAX_IDLE="1"))
            prime(spec, os.getpid())
            deadline = time.monotonic() + 120
            logs = lambda: "".join(open(p).read() for p in glob.glob(spares + "/*.log"))
            while "nobody claimed it" not in logs() and time.monotonic() < deadline:
                time.sleep(0.2)
            time.sleep(0.5)
            result["log"] = logs()
            result["stale_removed"] = [not os.path.exists(f) for f in stale]
            result["old_key_removed"] = [not os.path.exists(old_key + e) for e in (".lock", ".log")]
            result["new_key_kept"] = [os.path.exists(new_key + e) for e in (".lock", ".log")]
            result["left"] = sorted(n for n in os.listdir(spares)
                                    if os.path.isdir(os.path.join(spares, n)))
            result["slot_locks_free"] = slot_locks_free(pool)
        elif name == "changed":
            # A warm-up naming a source folder (as `:dep x = { path = "…" }` does): editing a
            # file there ends the spare, which no launch would claim any more.
            src = os.path.join(os.path.dirname(os.getcwd()), "src")
            os.makedirs(src)
            with open(os.path.join(src, "lib.rs"), "w") as f:
                f.write("// v1\n")
            path = os.path.join(os.environ["JUPYTER_PATH"], "kernels", KERNEL, "kernel.json")
            spec["env"]["LLM_LAB_SPARE_WARMUP"] = json.dumps(
                ['let __w = 1; // path = "../src"', ":clear"])
            with open(path, "w") as f:
                json.dump(spec, f)
            prime(spec, os.getpid())
            folder = wait_ready(pool)
            with open(os.path.join(folder, "info.json")) as f:
                info = json.load(f)
            time.sleep(6)
            result["kept_while_unchanged"] = alive(info["evcxr_pid"])
            time.sleep(1)  # a modification time the file system tells apart
            with open(os.path.join(src, "lib.rs"), "w") as f:
                f.write("// v2\n")
            result["evcxr_gone"] = wait_gone(info["evcxr_pid"], 30)
            result["folder_removed"] = not os.path.exists(folder)
            spares = os.path.join(pool, "spares")
            result["log"] = "".join(open(p).read() for p in glob.glob(spares + "/*.log"))
        else:
            raise ValueError(f"unknown scenario {name}")
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        for km, kc in kernels:
            kc.stop_channels()
            try:
                km.shutdown_kernel(now=True)
            except Exception:
                pass


def main():
    name, work, out = sys.argv[1:4]
    with open(os.path.join(work, "jupyter", "kernels", KERNEL, "kernel.json")) as f:
        spec = json.load(f)
    pool = spec["argv"][2]
    result = {"scenario": name}
    os.chdir(os.path.join(work, "work"))
    scenario(name, spec, pool, result)
    with open(out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
