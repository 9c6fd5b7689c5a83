"""Times the course's kernel as a student meets it, for `cargo xtask bench-notebook`.

A fresh kernel runs the lessons' first cells (the `:dep` cell, the model load, the first logits),
then the kernel is restarted and runs them again: both cold, in a build folder seeded from the
warmed template; then a trivial cell runs a few times. Then in the lab's Jupyter server, as a
student meets it (REST session, websocket cells): the first lesson opened at once (its spare
still warming: a cold kernel), then in a new server once the spare it warms as it starts is warm
(the student read the lesson's start), then Restart once the next spare is warm. Each step is
timed from this client: what a student waits for, kernel start included.

usage: python bench_notebook.py KERNEL CELLS.json OUT.json
CELLS.json: {"first": [[name, source], ...], "trivial": source, "trivial_runs": n,
             "lab": null | {"kernel", "jupyter", "jupyter_path", "pool", "root", "notebook"}}
OUT.json: {"steps": [{"phase", "step", "seconds", "ok", "error"}], "notes": [text],
           "error": null | message}
"""

import json
import os
import re
import subprocess
import sys
import time
import uuid

from jupyter_client.manager import start_new_kernel


class Outputs:
    """What a cell's iopub messages show: its text and its error."""

    def __init__(self):
        self.text, self.error = [], None

    def take(self, msg):
        """Keeps the output of `msg` (a message of the cell); True once the kernel is idle."""
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream":
            self.text.append(content["text"])
        elif kind in ("execute_result", "display_data"):
            self.text.append(content["data"].get("text/plain", ""))
        elif kind == "error":
            self.error = f"{content['ename']}: {content['evalue']}"
        return kind == "status" and content["execution_state"] == "idle"

    def result(self, started):
        """(seconds since `started`, error text or None, output text)."""
        return time.monotonic() - started, self.error, "".join(self.text)


def run_cell(kc, source, timeout):
    """Executes `source`; returns (seconds, error text or None, output text)."""
    t = time.monotonic()
    msg_id = kc.execute(source, store_history=True)
    out = Outputs()
    deadline = t + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return time.monotonic() - t, f"no answer within {timeout} s", "".join(out.text)
        try:
            msg = kc.get_iopub_msg(timeout=left)
        except Exception:  # queue.Empty: the deadline is checked above
            continue
        if msg["parent_header"].get("msg_id") != msg_id:
            continue
        if out.take(msg):
            return out.result(t)


def wait_for_log(server, pattern, after=0, limit=1800):
    """The first match of `pattern` in the server's log past offset `after`, waiting for it."""
    started = time.monotonic()
    while time.monotonic() - started < limit:
        with open(server.log.name, encoding="utf-8", errors="replace") as f:
            m = re.compile(pattern, re.M).search(f.read(), after)
        if m:
            return m, time.monotonic() - started
        time.sleep(0.2)
    raise TimeoutError(f"the server's log never said {pattern!r} within {limit} s")


def rss_mib(pid):
    """Resident memory of `pid` and its descendants, MiB, and how many processes that is."""
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
            except (OSError, ValueError, IndexError):
                pass
    total, count, todo = 0, 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        count += 1
        except OSError:
            continue
        todo.extend(children.get(p, []))
    return total / 1024, count


class Lab:
    """A Jupyter server started as `cargo xtask lab` starts it (the lab's configuration, whose
    extension warms a spare kernel for the lessons as the server starts), on a free port."""

    def __init__(self, spec):
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.token = uuid.uuid4().hex
        self.base = f"127.0.0.1:{self.port}"
        args = [spec["jupyter"], "server", "--no-browser", f"--port={self.port}",
                "--ServerApp.ip=127.0.0.1", f"--IdentityProvider.token={self.token}",
                f"--ServerApp.root_dir={spec['root']}"]
        if os.geteuid() == 0:
            args.append("--allow-root")
        env = dict(os.environ, JUPYTER_PATH=spec["jupyter_path"])
        self.log = open(os.path.join(spec["pool"], f"server-{self.port}.log"), "w")
        self.started, self.started_at = time.monotonic(), time.time()
        self.proc = subprocess.Popen(args, cwd=spec["root"], env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 120
        while True:
            try:
                self.call("GET", "/api/status")
                break
            except OSError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("the Jupyter server did not start")
                time.sleep(0.2)

    def call(self, method, path, body=None):
        import http.client

        conn = http.client.HTTPConnection(self.base, timeout=60)
        conn.request(method, path, body=None if body is None else json.dumps(body),
                     headers={"Authorization": f"token {self.token}",
                              "Content-Type": "application/json"})
        response = conn.getresponse()
        data = response.read()
        if response.status >= 400:
            raise RuntimeError(f"{method} {path}: {response.status} {data[:500]!r}")
        return json.loads(data or b"null")

    def open_notebook(self, path, kernel):
        """Starts the notebook's kernel as JupyterLab does when it opens a notebook; a client of
        its channels (the server's websocket)."""
        import websocket

        session = self.call("POST", "/api/sessions", {
            "path": path, "type": "notebook", "name": "", "kernel": {"name": kernel}})
        ws = websocket.create_connection(
            f"ws://{self.base}/api/kernels/{session['kernel']['id']}/channels",
            header=[f"Authorization: token {self.token}"], timeout=3600)
        kernel = WebsocketKernel(ws)
        kernel.id = session["kernel"]["id"]
        return kernel

    def restart(self, kernel_id):
        """Restart, as JupyterLab does: the REST call, then the kernel's channels again (a
        kernel that was a spare has other ports)."""
        import websocket

        self.call("POST", f"/api/kernels/{kernel_id}/restart", {})
        ws = websocket.create_connection(
            f"ws://{self.base}/api/kernels/{kernel_id}/channels",
            header=[f"Authorization: token {self.token}"], timeout=3600)
        kernel = WebsocketKernel(ws)
        kernel.id = kernel_id
        return kernel

    def close(self):
        self.proc.terminate()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class WebsocketKernel:
    """A notebook's kernel as JupyterLab talks to it: JSON messages on one websocket."""

    def __init__(self, ws):
        self.ws, self.session = ws, uuid.uuid4().hex

    def send(self, channel, msg_type, content):
        msg_id = uuid.uuid4().hex
        self.ws.send(json.dumps({
            "header": {"msg_id": msg_id, "session": self.session, "username": "bench",
                       "msg_type": msg_type, "version": "5.3",
                       "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
            "parent_header": {}, "metadata": {}, "content": content, "channel": channel,
            "buffers": []}))
        return msg_id

    def ready(self, limit=300):
        """Waits for the kernel's answer to kernel_info, as JupyterLab does before a cell runs."""
        msg_id = self.send("shell", "kernel_info_request", {})
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            msg = json.loads(self.ws.recv())
            if (msg.get("channel") == "shell"
                    and msg["parent_header"].get("msg_id") == msg_id):
                return
        raise TimeoutError(f"no kernel_info_reply within {limit} s")

    def run(self, source, timeout):
        """Like run_cell: (seconds, error text or None, output text)."""
        t = time.monotonic()
        msg_id = self.send("shell", "execute_request", {
            "code": source, "silent": False, "store_history": True, "user_expressions": {},
            "allow_stdin": False, "stop_on_error": True})
        out = Outputs()
        self.ws.settimeout(timeout)
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get("channel") != "iopub" or msg["parent_header"].get("msg_id") != msg_id:
                continue
            if out.take(msg):
                return out.result(t)


def main():
    kernel, cells_path, out_path = sys.argv[1:4]
    with open(cells_path, encoding="utf-8") as f:
        cells = json.load(f)
    steps, notes = [], []
    result = {"steps": steps, "notes": notes, "error": None}

    def note(text):
        notes.append(text)
        print(f"    {text}", file=sys.stderr, flush=True)

    def record(phase, step, seconds, error=None, output=""):
        steps.append(
            {"phase": phase, "step": step, "seconds": seconds, "ok": error is None,
             "error": error, "output": output[-2000:]}
        )
        # Progress as it happens, on the terminal xtask runs in.
        print(f"    {phase}: {step}: {seconds:.2f} s" + (f" ({error})" if error else ""),
              file=sys.stderr, flush=True)
        return error is None

    def first_logits(km, kc, phase, started, run=None):
        run = run or (lambda source, limit: run_cell(kc, source, limit))
        ok = record(phase, "kernel ready", time.monotonic() - started)
        for name, source in cells["first"]:
            if not ok:
                return False
            seconds, error, output = run(source, 3600)
            ok = record(phase, name, seconds, error, output)
        if ok:
            record(phase, "total to first logits", time.monotonic() - started)
        return ok

    km = kc = None
    try:
        started = time.monotonic()
        km, kc = start_new_kernel(kernel_name=kernel, startup_timeout=300)
        ok = first_logits(km, kc, "fresh kernel", started)
        if ok:
            started = time.monotonic()
            km.restart_kernel(now=True)
            kc.wait_for_ready(timeout=300)
            ok = first_logits(km, kc, "kernel restart", started)
        if ok:
            for i in range(int(cells["trivial_runs"])):
                seconds, error, output = run_cell(kc, cells["trivial"], 600)
                if not record("trivial cell", f"run {i + 1}", seconds, error, output):
                    break
        lab = cells.get("lab")
        if ok and lab:
            kc.stop_channels()
            km.shutdown_kernel(now=True)
            km = kc = None
            # A student's kernels: no forced build folder.
            os.environ.pop("LLM_LAB_KERNEL_DIR", None)
            warm = r"llm-lab: spare kernel (\w+) warm in"
            for phase in ("lab: at once", "lab: spare warm"):
                if not ok:
                    break
                server = Lab(lab)
                try:
                    if phase == "lab: spare warm":
                        _, waited = wait_for_log(server, warm)
                        note(f"the lab's spare for the lessons was warm {waited:.1f} s after "
                             "the server answered (the student opens and reads the lesson; "
                             "not counted)")
                        m, _ = wait_for_log(server, r"spare kernel \w+ \(pid (\d+)\)")
                        mib, procs = rss_mib(int(m.group(1)))
                        note(f"an idle warm spare holds {mib:.0f} MiB resident ({procs} "
                             "processes: evcxr and its runner)")
                    started = time.monotonic()
                    kernel = server.open_notebook(lab["notebook"], lab["kernel"])
                    kernel.ready()
                    ok = first_logits(None, None, phase, started, run=kernel.run)
                    if ok and phase == "lab: spare warm":
                        # The next spare (for the same folder) warms while the student works.
                        with open(server.log.name, encoding="utf-8", errors="replace") as f:
                            seen = len(f.read())
                        _, waited = wait_for_log(server, warm, after=seen)
                        note(f"the next spare warmed {waited:.1f} s after the first cells ran "
                             "(the student works in the lesson meanwhile; not counted)")
                        started = time.monotonic()
                        kernel = server.restart(kernel.id)
                        kernel.ready()
                        ok = first_logits(None, None, "lab: restart", started, run=kernel.run)
                finally:
                    server.close()
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
