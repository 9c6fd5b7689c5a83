"""Times the course's kernel as a student meets it, for `cargo xtask bench-notebook`.

A fresh kernel runs the lessons' first cells (the `:dep` cell, the model load, the first logits),
then the kernel is restarted and runs them again, then a trivial cell runs a few times. Each step
is timed from this client: what a student waits for, kernel start included.

usage: python bench_notebook.py KERNEL CELLS.json OUT.json
CELLS.json: {"first": [[name, source], ...], "trivial": source, "trivial_runs": n}
OUT.json: {"steps": [{"phase", "step", "seconds", "ok", "error"}], "error": null | message}
"""

import json
import sys
import time

from jupyter_client.manager import start_new_kernel


def run_cell(kc, source, timeout):
    """Executes `source`; returns (seconds, error text or None, output text)."""
    t = time.monotonic()
    msg_id = kc.execute(source, store_history=True)
    error, text = None, []
    deadline = t + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return time.monotonic() - t, f"no answer within {timeout} s", "".join(text)
        try:
            msg = kc.get_iopub_msg(timeout=left)
        except Exception:  # queue.Empty: the deadline is checked above
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            text.append(content["text"])
        elif kind in ("execute_result", "display_data"):
            text.append(content["data"].get("text/plain", ""))
        elif kind == "error":
            error = f"{content['ename']}: {content['evalue']}"
        elif kind == "status" and content["execution_state"] == "idle":
            return time.monotonic() - t, error, "".join(text)


def main():
    kernel, cells_path, out_path = sys.argv[1:4]
    with open(cells_path, encoding="utf-8") as f:
        cells = json.load(f)
    steps = []
    result = {"steps": steps, "error": None}

    def record(phase, step, seconds, error=None, output=""):
        steps.append(
            {"phase": phase, "step": step, "seconds": seconds, "ok": error is None,
             "error": error, "output": output[-2000:]}
        )
        # Progress as it happens, on the terminal xtask runs in.
        print(f"    {phase}: {step}: {seconds:.2f} s" + (f" ({error})" if error else ""),
              file=sys.stderr, flush=True)
        return error is None

    def first_logits(km, kc, phase, started):
        ok = record(phase, "kernel ready", time.monotonic() - started)
        for name, source in cells["first"]:
            if not ok:
                return False
            seconds, error, output = run_cell(kc, source, 3600)
            ok = record(phase, name, seconds, error, output)
        if ok:
            record(phase, "total to first logits", time.monotonic() - started)
        return ok

    km = kc = None
    try:
        started = time.monotonic()
        km, kc = start_new_kernel(kernel_name=kernel, startup_timeout=300)
        if first_logits(km, kc, "fresh kernel", started):
            started = time.monotonic()
            km.restart_kernel(now=True)
            kc.wait_for_ready(timeout=300)
            if first_logits(km, kc, "kernel restart", started):
                for i in range(int(cells["trivial_runs"])):
                    seconds, error, output = run_cell(kc, cells["trivial"], 600)
                    if not record("trivial cell", f"run {i + 1}", seconds, error, output):
                        break
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        if kc is not None:
            kc.stop_channels()
        if km is not None:
            try:
                km.shutdown_kernel(now=True)
            except Exception:
                pass
        with open(out_path, "w", encoding="utf-8") as f:
            json.dump(result, f)


if __name__ == "__main__":
    main()
