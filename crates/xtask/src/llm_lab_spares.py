"""Warm spare kernels for the course's lab, on Jupyter's kernel provisioner API.

Even in a warm build folder a new evcxr spends ~15 s of its own (its rust-analyzer loads the
crate graph to type each `let`) before a cell's first answer. So the lab's Jupyter server keeps,
for each notebook folder that has had a kernel, one *spare*: the kernelspec's own command (the
launcher, a build folder of the pool) started ahead of time with a connection file of its own,
that has run the warm-up cells (LLM_LAB_SPARE_WARMUP in the kernelspec's env). The next kernel
of that folder — a notebook opened, or Restart — is handed the spare if it is warm:
`launch_kernel` returns the spare's connection info (its ports and key), which Jupyter adopts as
the kernel's, and the spare's process becomes the kernel's process (poll, signals, kill work on
it as on any local kernel). Then the next spare starts. A launch that finds no warm spare starts
cold at once, as Jupyter would, and leaves a warming spare for the next kernel: a launch never
waits (JupyterLab, waiting on a slow session request, can start a second kernel for the same
notebook and run its cells on neither).

A spare is matched on the kernelspec's command, the notebook's folder and the settings that
shape a build (EVCXR_, CARGO, RUST, LLM_LAB_, CANDLE_, PATH, HOME, XDG_ variables); a spare whose
course crate changed since it warmed is ended instead of handed out. Spares live in this server
process only: two servers never share one. A spare ends with its server (its exit, or on Linux
even a kill: see launch_kernel.py), when nobody took it for LLM_LAB_SPARE_MAX_IDLE seconds
(2 hours), or when its warm-up fails. While it warms it runs at nice 10 where the priority can
be given back when it is handed out (root, or an RLIMIT_NICE that allows it).

evcxr numbers every request it runs, the warm-up's too: a kernel that was a spare numbers the
student's first cell after the warm-up's cells.

The same module is the server extension that starts a spare for the lessons as the server
starts (so the first lesson's kernel is warm too), and marks the process as a server: elsewhere
(nbclient, a script) kernels start cold unless LLM_LAB_SPARE_KERNELS=1. LLM_LAB_SPARE_KERNELS=0
turns spares off; LLM_LAB_KERNEL_DIR (a forced build folder) does too.
"""

import asyncio
import atexit
import hashlib
import json
import logging
import os
import re
import signal
import time
import uuid

from jupyter_client.connect import port_names
from jupyter_client.provisioning import LocalProvisioner

KERNEL = "llm-lab"
# The folders whose first kernel is warm: the lessons (where the lab opens).
FOLDERS = ["notebooks"]


def _max_idle():
    try:
        return float(os.environ.get("LLM_LAB_SPARE_MAX_IDLE", 2 * 3600))
    except ValueError:
        return 2 * 3600.0


MAX_IDLE = _max_idle()
# A warm-up that takes longer than this (a cold build of candle takes minutes) is abandoned.
WARMUP_LIMIT = 1800
WARMUP_NICE = 10
SETTINGS = ("EVCXR_", "CARGO", "RUST", "LLM_LAB_", "CANDLE_", "PATH", "HOME", "XDG_")

# The server's log once the extension is loaded (a script may configure this one).
log = logging.getLogger("llm_lab_spares")
# The spare of each key, waiting or warming (this server's only).
_spares = {}
_in_server = False


def warmup_cells(env):
    try:
        cells = json.loads(env.get("LLM_LAB_SPARE_WARMUP", ""))
    except ValueError:
        return None
    if not isinstance(cells, list) or not cells or not all(isinstance(c, str) for c in cells):
        return None
    return cells


def enabled(env):
    """Whether kernels launched with `env` get spares."""
    wanted = env.get("LLM_LAB_SPARE_KERNELS")
    if wanted == "0" or env.get("LLM_LAB_KERNEL_DIR") or warmup_cells(env) is None:
        return False
    return _in_server or wanted == "1"


def newest_source(folder):
    """The newest modification time under `folder` (its `target` and hidden folders aside)."""
    newest = 0.0
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if d != "target" and not d.startswith(".")]
        for name in files + [""]:
            try:
                newest = max(newest, os.stat(os.path.join(root, name)).st_mtime)
            except OSError:
                pass
    return newest


def path_deps(text):
    """The `path = "…"` dependencies named in `text` (cells or a Cargo.toml)."""
    return re.findall(r'path\s*=\s*"([^"]+)"', text)


def sources(cells, cwd):
    """The newest modification time of each crate the warm-up compiles (`:dep x = { path = … }`,
    and the path dependencies of its Cargo.toml); None when one of them is not there from `cwd`
    (a folder whose kernels cannot warm up so)."""
    paths = [os.path.join(cwd, p) for p in path_deps("\n".join(cells))]
    if not all(os.path.isdir(p) for p in paths):
        return None
    for p in list(paths):
        try:
            with open(os.path.join(p, "Cargo.toml")) as f:
                paths += [os.path.join(p, d) for d in path_deps(f.read())]
        except OSError:
            pass
    return [newest_source(p) for p in paths]


def spare_key(argv, cwd, env):
    settings = sorted((k, v) for k, v in env.items() if k.startswith(SETTINGS))
    text = json.dumps([list(argv), os.path.realpath(cwd), settings])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def may_unnice():
    """Whether this user may give a niced process its priority back."""
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_NICE)[0]
        return os.geteuid() == 0 or limit == resource.RLIM_INFINITY or limit >= 20
    except (ImportError, AttributeError, OSError):
        return False


def kill_group(process):
    """Ends a kernel's process and its process group (evcxr, its runner, cargo)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except OSError:
        try:
            process.kill()
        except OSError:
            pass


class Spare:
    """A kernel started ahead of time for `key`, warming up or waiting to be handed out."""

    def __init__(self, key, argv, cwd, env, cells, compiled):
        from jupyter_client.connect import write_connection_file
        from jupyter_client.launcher import launch_kernel
        from jupyter_core.paths import jupyter_runtime_dir

        self.key, self.cwd, self.cells, self.sources = key, cwd, cells, compiled
        self.idle = self.process = self.file = None
        self.ports = {}
        runtime = jupyter_runtime_dir()
        os.makedirs(runtime, exist_ok=True)
        # Ports reserved in Jupyter's own cache until the spare ends: a kernel launched before
        # evcxr binds them cannot be given the same ones.
        self.ports = {name: _port_cache().find_available_port("127.0.0.1") for name in port_names}
        try:
            self.file = os.path.join(runtime, f"llm-lab-spare-{uuid.uuid4()}.json")
            _, info = write_connection_file(self.file, ip="127.0.0.1", **self.ports,
                                            key=uuid.uuid4().hex.encode(), kernel_name=KERNEL)
            info = dict(info)
            info["key"] = info["key"].encode() if isinstance(info["key"], str) else info["key"]
            self.info = info
            env = {k: v for k, v in env.items() if k != "JPY_SESSION_NAME"}
            self.niced = may_unnice()
            if self.niced:
                env["LLM_LAB_KERNEL_NICE"] = str(WARMUP_NICE)
            cmd = [a.replace("{connection_file}", self.file) for a in argv]
            self.process = launch_kernel(cmd, env=env, cwd=cwd)
        except BaseException:
            self.end()
            raise
        self.started = time.monotonic()
        self.warm = asyncio.ensure_future(self._warm_up())
        log.info("llm-lab: spare kernel %s (pid %s) warming for %s", key, self.process.pid, cwd)

    async def _warm_up(self):
        """Runs the warm-up cells, one at a time; True once they all ran."""
        from jupyter_client.asynchronous import AsyncKernelClient

        client = None
        try:
            client = AsyncKernelClient()
            client.load_connection_info(self.info)
            client.start_channels()
            await asyncio.wait_for(self._run_cells(client), WARMUP_LIMIT)
        except Exception as e:
            log.warning("llm-lab: spare kernel %s failed to warm up (%s: %s)", self.key,
                        type(e).__name__, e)
            self.end()
            return False
        finally:
            if client is not None:
                try:
                    client.stop_channels()
                except Exception:
                    pass
        took = time.monotonic() - self.started
        log.info("llm-lab: spare kernel %s warm in %.1f s", self.key, took)
        self.idle = asyncio.get_running_loop().call_later(MAX_IDLE, self.retire, "nobody took it")
        return True

    async def _run_cells(self, client):
        while True:  # kernel_info answered: evcxr is up (it dies: the wait below fails)
            if self.process.poll() is not None:
                raise RuntimeError(f"its kernel exited ({self.process.returncode})")
            client.kernel_info()
            try:
                reply = await client.get_shell_msg(timeout=1)
            except Exception:
                continue
            if reply["msg_type"] == "kernel_info_reply":
                break
        for cell in self.cells:
            reply = await client.execute_interactive(
                cell, store_history=False, allow_stdin=False, stop_on_error=False,
                output_hook=lambda msg: None, timeout=WARMUP_LIMIT)
            if reply["content"].get("status") != "ok":
                raise RuntimeError(f"the warm-up cell {cell!r} failed")

    def stale(self):
        return sources(self.cells, self.cwd) != self.sources

    def retire(self, why):
        log.info("llm-lab: spare kernel %s ended: %s", self.key, why)
        self.end()

    def end(self):
        if _spares.get(self.key) is self:
            del _spares[self.key]
        if self.idle is not None:
            self.idle.cancel()
        if self.process is not None:
            kill_group(self.process)
            # Reaped without blocking the server: the kill is immediate.
            asyncio.get_event_loop().run_in_executor(None, self.process.wait)
        self.forget_file()
        self.free_ports()

    def free_ports(self):
        for port in self.ports.values():
            _port_cache().return_port(port)
        self.ports = {}

    def forget_file(self):
        try:
            if self.file is not None:
                os.unlink(self.file)
        except OSError:
            pass

    def take(self):
        """The spare, for a kernel, if it is warm; None if it is still warming (it stays for the
        next kernel), could not warm, or went stale (it ends)."""
        if not self.warm.done():
            return None
        if _spares.get(self.key) is self:
            del _spares[self.key]
        if self.warm.cancelled() or self.warm.exception() is not None or not self.warm.result():
            self.end()
            return None
        if self.process.poll() is not None:
            log.warning("llm-lab: spare kernel %s had exited", self.key)
            self.end()
            return None
        if self.stale():
            self.retire("the sources it compiled changed")
            return None
        if self.idle is not None:
            self.idle.cancel()
        if self.niced:
            try:
                # Every thread of every process in its group (Linux applies PRIO_PGRP per thread).
                os.setpriority(os.PRIO_PGRP, self.process.pid, 0)
            except OSError as e:
                log.warning("llm-lab: spare kernel %s keeps nice %s (%s)", self.key, WARMUP_NICE, e)
        self.forget_file()
        return self


def ensure_spare(argv, cwd, env):
    """Starts a spare for this launch's key unless one is warming or waiting."""
    key = spare_key(argv, cwd, env)
    if key in _spares:
        return
    cells = warmup_cells(env)
    compiled = sources(cells, cwd) if cells is not None else None
    if compiled is None:
        log.info("llm-lab: no spare kernel for %s (the warm-up's crates are not there from it)",
                 cwd)
        return
    try:
        _spares[key] = Spare(key, argv, cwd, env, cells, compiled)
    except Exception as e:  # no spare: the next kernel starts cold
        log.warning("llm-lab: no spare kernel (%s: %s)", type(e).__name__, e)


def _port_cache():
    from jupyter_client.connect import LocalPortCache

    return LocalPortCache.instance()


@atexit.register
def _end_all():
    for spare in list(_spares.values()):
        kill_group(spare.process)
        spare.forget_file()


class SpareProvisioner(LocalProvisioner):
    """A local kernel that is a warm spare when one is there (see the module)."""

    async def launch_kernel(self, cmd, **kwargs):
        env = kwargs.get("env") or dict(os.environ)
        cwd = kwargs.get("cwd") or os.getcwd()
        argv = list(self.kernel_spec.argv)
        if not enabled(env):
            return await super().launch_kernel(cmd, **kwargs)
        spare = _spares.get(spare_key(argv, cwd, env))
        if spare is not None and spare.take() is not None:
            # The ports Jupyter reserved for a kernel of its own (or the kernel before a
            # restart) are free again; the spare's stay reserved until this kernel's cleanup.
            if self.ports_cached and self.connection_info:
                for name in port_names:
                    if isinstance(self.connection_info.get(name), int):
                        _port_cache().return_port(self.connection_info[name])
            self.ports_cached, spare.ports = True, {}
            self.process, self.pid, self.pgid = spare.process, spare.process.pid, spare.process.pid
            self.cwd = cwd
            self.connection_info = spare.info
            log.info("llm-lab: kernel %s is the warm spare %s", self.kernel_id, spare.key)
            ensure_spare(argv, cwd, env)
            return self.connection_info
        info = await super().launch_kernel(cmd, **kwargs)
        log.info("llm-lab: kernel %s starts cold%s", self.kernel_id,
                 " (its folder's spare is still warming)" if spare is not None else "")
        ensure_spare(argv, cwd, env)
        return info


def _jupyter_server_extension_points():
    return [{"module": __name__}]


def _load_jupyter_server_extension(app):
    """Marks this process as a server (its kernels get spares) and starts the lessons' spare."""
    global _in_server, log
    _in_server = True
    log = app.log
    try:
        spec = app.kernel_spec_manager.get_kernel_spec(KERNEL)
    except Exception as e:  # no course kernel here: nothing to warm
        app.log.warning("llm-lab: no spare kernel warmed (%s)", e)
        return
    # A kernel's environment: the server's, with its kernelspec's settings.
    env = dict(os.environ, **spec.env)
    if not enabled(env):
        return
    from tornado.ioloop import IOLoop

    for folder in FOLDERS:
        folder = os.path.join(app.root_dir, folder)
        if os.path.isdir(folder):
            IOLoop.current().add_callback(ensure_spare, list(spec.argv), folder, env)
