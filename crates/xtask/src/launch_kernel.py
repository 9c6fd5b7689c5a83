"""Starts the course's evcxr kernel: a warm spare when one is waiting, else in a build folder of its own.

Build folders. evcxr compiles every cell as a crate in a work folder (EVCXR_TMPDIR). By default
that folder is new for every kernel, so each kernel compiles the course crate again (half a
minute), and the compiled-crate cache that would spare the dependencies is shared by all kernels
and breaks when two compile at once. Here each kernel takes the first free folder of a pool
(`slot-N`, a lock held for the kernel's whole life, so two kernels never share one) and keeps it
for the next kernel: a restart finds everything compiled. A slot that does not exist yet starts
as a copy of the template that `cargo xtask setup` warmed, so even the first kernel of a notebook
starts warm.

Spare kernels. Even in a warm folder a new evcxr spends ~15 s of its own (its rust-analyzer loads
the crate graph to type each `let`) before the first logits. So every launch also makes sure
that one *spare* is warming or waiting for the same key (the notebook's folder, the evcxr binary,
the warm-up cells, the course crate's sources, the kernel's settings, the Jupyter server): a
detached keeper process
(in a session of its own; its evcxr niced while it warms, where the priority can be given back
when it is claimed) takes a slot, starts evcxr on a connection file of its own and
runs the warm-up cells (the notebooks' setup cell, a `let`, `:clear`). The next launch for that
key claims it (an atomic rename of its folder: one claimer wins) and becomes a proxy between
Jupyter's ports and the spare's: every message is checked with one connection's key and signed
again with the other's, and execution counts are shifted so that the student sees a cold
kernel's numbers. The keeper ends its evcxr, frees the slot and removes the spare's folder when
the claimer exits (even killed), when the process that started the launcher (the Jupyter server)
is gone, when nobody claimed the spare for MAX_IDLE seconds (LLM_LAB_SPARE_MAX_IDLE, 2 hours by
default), or when the sources its warm-up compiled change. Anything failing on the way to a
spare falls back to the cold start. The lab's Jupyter server asks for a spare for the lessons'
folder as it starts (`warm_spares.py`, through `--spare`), so the first lesson's kernel is warm
too; a launch that finds its key's spare still starting (`KEY.new-PID`) waits for it.

A spare may be claimed before its warm-up is over. evcxr answers `kernel_info_request` only
after the cells queued before it (and Jupyter gives up on a kernel silent for 60 s), and it takes
the next request from any of its clients in turn (a student's cell could run between the
warm-up's and lose its variables to `:clear`). So the keeper asks for evcxr's kernel_info reply
before the warm-up, the proxy answers Jupyter's with it and holds the student's requests until
the keeper marks the warm-up over (`warmed`). A launch never claims a spare it started itself:
it would gain nothing when the student runs the first cell at once. Everything of a spare lives
in SLOTS_DIR/spares (or the user's own pool): KEY (a spare to claim: its connection file,
info.json, `ready` once warm), KEY.new-PID (being started by keeper PID), KEY.claimed-…
(claimed; `warmed` once its warm-up is over), KEY.lock (held by the keeper of KEY's unclaimed
spare), KEY.log.

usage: python launch_kernel.py SLOTS_DIR EVCXR_JUPYTER CONNECTION_FILE
       python launch_kernel.py SLOTS_DIR EVCXR_JUPYTER --spare PID   (only start a spare, for
       the kernels to come in this folder, that ends with process PID)
LLM_LAB_KERNEL_DIR=PATH uses that folder (waiting for it to be free) instead of a pool slot, and
no spare: the warm-up builds the template so, and notebook runs and benchmarks use it.
LLM_LAB_SPARE_KERNELS=0 turns spares off. LLM_LAB_SPARE_WARMUP (a JSON list of cells, set by the
kernelspec) is the warm-up; without it there are no spares.
"""

import fcntl
import hashlib
import hmac
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
import uuid

TEMPLATE = "template"
# Slots beyond this are not worth keeping: the kernel falls back to a folder of its own.
MAX_SLOTS = 32
# Written into a folder only once it is complete: a copy interrupted half-way is not used.
READY = ".llm-lab-ready"
SPARES = "spares"
# Written into a claimed spare's folder once its warm-up is over (whether it failed or not).
WARMED = "warmed"
# A spare nobody claimed for this long is ended (it holds a slot and ~0.5 GB of memory).
MAX_IDLE = float(os.environ.get("LLM_LAB_SPARE_MAX_IDLE", 2 * 3600))
# A warming spare yields the processor to the student's kernels (when it can be undone).
WARMUP_NICE = 10
# A key whose lock file is this old (seconds) is forgotten: its lock and log files are removed.
OLD_KEY = 2 * 24 * 3600
# How often a waiting spare checks that the sources it compiled did not change.
RECHECK = 5.0
# A warm-up that takes longer than this (a cold build of candle takes minutes) is abandoned.
WARMUP_LIMIT = 1800
DELIMITER = b"<IDS|MSG>"
# evcxr's answer to the keeper's kernel_info_request, in a spare's folder.
KERNEL_INFO = "kernel_info.json"
# How long a launch waits for a spare whose keeper is starting it (copying its build folder,
# starting evcxr): Jupyter waits 60 s for a new kernel's first answer.
STARTING_LIMIT = 30
# Kernel-to-client messages whose execution count the warm-up shifted.
COUNTED = ("execute_input", "execute_reply", "execute_result", "error")


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


def take_folder(slots):
    """(folder, held lock) for this kernel, or (None, None) when every slot is busy."""
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


# ---------------------------------------------------------------------------------------------
# Processes: a pid is only trusted together with its start time (pids are reused).


def start_time(pid):
    """The start time of process `pid` (clock ticks since boot), or None if it does not exist."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
        # The command name (in parentheses) may hold spaces: fields count from its end.
        return int(stat[stat.rindex(b")") + 2:].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def watch(pid, started):
    """A pidfd that becomes readable when process `pid` (started at `started`) ends, or None if
    it is already gone."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if start_time(pid) != started:
        os.close(fd)
        return None
    return fd


def ended(fd):
    return bool(select.select([fd], [], [], 0)[0])


def may_unnice():
    """Whether this user may give a niced process its priority back (root, or an RLIMIT_NICE
    that allows it): only then does a spare warm up niced."""
    import resource

    return os.geteuid() == 0 or resource.getrlimit(resource.RLIMIT_NICE)[0] >= 20


def spare_child(niced):
    """What a spare's evcxr runs before exec: SIGKILL when its keeper ends, and niced while it
    warms up if the priority can be given back when it is claimed."""

    def setup():
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if niced:
            os.nice(WARMUP_NICE)

    return setup


def kill_group(pid):
    """Ends process `pid` and everything in its process group (evcxr, its runner, cargo)."""
    for kill in (lambda: os.killpg(pid, signal.SIGKILL), lambda: os.kill(pid, signal.SIGKILL)):
        try:
            kill()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# Jupyter's wire protocol, as much as a proxy needs.


def signer(connection):
    """A function signing a message's four JSON frames with the connection's key."""
    key = connection.get("key", "").encode()
    scheme = connection.get("signature_scheme") or "hmac-sha256"
    if not key:
        return lambda parts: b""
    digest = scheme.split("-", 1)[1] if scheme.startswith("hmac-") else scheme
    hashlib.new(digest)  # an unknown scheme fails here, before any message

    def sign(parts):
        mac = hmac.new(key, digestmod=digest)
        for p in parts:
            mac.update(p)
        return mac.hexdigest().encode()

    return sign


def split(frames):
    """(identities, signature, the four JSON frames, buffers), or None for a malformed message."""
    try:
        i = frames.index(DELIMITER)
    except ValueError:
        return None
    if len(frames) < i + 6:
        return None
    return frames[:i], frames[i + 1], frames[i + 2:i + 6], frames[i + 6:]


def endpoint(connection, port):
    transport = connection.get("transport", "tcp")
    if transport == "ipc":
        return f"ipc://{connection['ip']}-{connection[port]}"
    return f"{transport}://{connection['ip']}:{connection[port]}"


def free_ports(n):
    import socket

    held, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        held.append(s)
        ports.append(s.getsockname()[1])
    for s in held:
        s.close()
    return ports


def new_connection():
    names = ["shell_port", "iopub_port", "stdin_port", "control_port", "hb_port"]
    c = dict(zip(names, free_ports(len(names))))
    c.update(ip="127.0.0.1", transport="tcp", key=uuid.uuid4().hex,
             signature_scheme="hmac-sha256", kernel_name="llm-lab")
    return c


def request(session, msg_type, content):
    """The four JSON frames of a new client request."""
    header = {"msg_id": uuid.uuid4().hex, "session": session, "username": "llm-lab",
              "date": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
              "msg_type": msg_type, "version": "5.3"}
    return header["msg_id"], [json.dumps(x).encode() for x in (header, {}, {}, content)]


# ---------------------------------------------------------------------------------------------
# Spares: which ones fit this launch, claiming one, proxying to it, keeping one ready.


def warmup_cells():
    try:
        cells = json.loads(os.environ.get("LLM_LAB_SPARE_WARMUP", ""))
    except ValueError:
        return None
    if not isinstance(cells, list) or not all(isinstance(c, str) for c in cells) or not cells:
        return None
    return cells


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


def spare_key(evcxr, cells, watched):
    """What a spare must share with a launch to stand in for its kernel: `watched` is the
    process it ends with (the Jupyter server), so that two servers never share one."""
    cwd = os.path.realpath(os.getcwd())
    # The crates the warm-up compiled (`:dep name = { path = "…" }`): a changed course crate
    # needs a new spare.
    sources = []
    for path in re.findall(r'path\s*=\s*"([^"]+)"', "\n".join(cells)):
        sources.append([path, newest_source(os.path.join(cwd, path))])
    prefixes = ("EVCXR_", "CARGO", "RUST", "LLM_LAB_", "CANDLE_", "PATH", "HOME", "XDG_")
    settings = sorted((k, v) for k, v in os.environ.items() if k.startswith(prefixes))
    with open(__file__, "rb") as f:
        launcher = hashlib.sha256(f.read()).hexdigest()
    evcxr = os.path.realpath(evcxr)
    try:
        built = os.stat(evcxr).st_mtime
    except OSError:
        built = None
    server = [watched, start_time(watched)]
    text = json.dumps([cwd, evcxr, built, cells, sources, settings, launcher, server])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def spares_enabled():
    if os.environ.get("LLM_LAB_KERNEL_DIR") or os.environ.get("LLM_LAB_SPARE_KERNELS") == "0":
        return False
    return warmup_cells() is not None and hasattr(os, "pidfd_open")


def claim(spares, key):
    """The spare for `key`, renamed to a folder of this launch's own; None if there is none."""
    src = os.path.join(spares, key)
    dst = f"{src}.claimed-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        os.rename(src, dst)
    except OSError:
        return None
    try:
        me = {"pid": os.getpid(), "start": start_time(os.getpid())}
        with open(os.path.join(dst, "claimer.tmp"), "w") as f:
            json.dump(me, f)
        os.rename(os.path.join(dst, "claimer.tmp"), os.path.join(dst, "claimer.json"))
        with open(os.path.join(dst, "info.json")) as f:
            info = json.load(f)
        with open(os.path.join(dst, "connection.json")) as f:
            connection = json.load(f)
        alive = watch(info["evcxr_pid"], info["evcxr_start"])
        if alive is None:
            raise RuntimeError("the spare's evcxr is gone")
        info["ready"] = os.path.exists(os.path.join(dst, "ready"))
        return dst, info, connection, alive
    except Exception as e:  # a broken spare: its keeper cleans up once its claimer has exited
        log(f"the spare kernel could not be used ({e}); starting a new kernel")
        return None


def take_reply(shell, pending):
    """Reads one message on the warm-up's shell: (the request it answers, its content) if that
    request is in `pending` (and takes it out), else None."""
    parsed = split(shell.recv_multipart())
    if parsed is None:
        return None
    try:
        parent = json.loads(parsed[2][1] or b"{}")
        content = json.loads(parsed[2][3] or b"{}")
    except ValueError:
        return None
    if parent.get("msg_id") not in pending or not isinstance(content, dict):
        return None
    pending.discard(parent["msg_id"])
    return parent["msg_id"], content


def warmed(folder):
    """Whether the warm-up of the spare in `folder` is over: `ready` (warm before any claim) or
    WARMED (claimed, and its keeper saw the last warm-up cell end)."""
    return any(os.path.exists(os.path.join(folder, m)) for m in ("ready", WARMED))


def claim_starting(spares, key, limit=STARTING_LIMIT):
    """claim(), or if a keeper is still starting the spare for `key` (its folder `KEY.new-PID`:
    the lab's server starts one as the lesson's kernel is asked for), the spare once it starts."""
    deadline = time.monotonic() + limit
    while True:
        claimed = claim(spares, key)
        if claimed is not None or time.monotonic() >= deadline:
            return claimed
        starting = [n for n in os.listdir(spares) if n.startswith(key + ".new-")]
        if not any(start_time(int(n.rsplit("-", 1)[1])) is not None for n in starting):
            return None
        time.sleep(0.1)


def start_keeper(slots, evcxr, spares, key, watched, after=""):
    """Starts a detached keeper for `key` that ends with process `watched` (it gives up if
    another keeper holds the key). With `after`, a claimed spare's folder, it starts its evcxr
    only once that spare's warm-up is over: two warm-ups at once on two cores would slow down the
    one the student waits for."""
    started = start_time(watched)
    if started is None:
        return
    args = [sys.executable, os.path.abspath(__file__), "--keeper", slots, evcxr, spares, key,
            str(watched), str(started), after]
    with open(os.path.join(spares, key + ".log"), "a") as err:
        # The keeper forks once more and this child exits: nothing is left for evcxr to reap.
        subprocess.run(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                       start_new_session=True, close_fds=True, check=False, timeout=30)


def proxy(claimed, jupyter_file):
    """Serves Jupyter's connection with the claimed spare's evcxr until that evcxr exits. Raises
    before serving anything when a port cannot be bound or reached (the caller goes cold)."""
    import zmq

    folder, info, spare, evcxr_ended = claimed
    with open(jupyter_file) as f:
        jupyter = json.load(f)
    to_kernel, to_client = signer(spare), signer(jupyter)
    # Jupyter's side checks with its key, the spare's with the spare's.
    from_client, from_kernel = to_client, to_kernel
    # Execution counts the warm-up took: every cell of a spare claimed once warm, else as many
    # as the keeper says when it marks the warm-up over (it cuts a claimed one short).
    counted, warmup_session = {"offset": int(info["offset"])}, info["session"]
    ctx = zmq.Context()
    made = []

    def socket(kind, identity=None):
        s = ctx.socket(kind)
        s.linger = 1000
        if identity is not None:
            s.identity = identity
        made.append(s)
        return s

    identity = uuid.uuid4().hex.encode()
    # The kernel answers stdin requests to the identity of the shell request: share it.
    k_shell, k_stdin = socket(zmq.DEALER, identity), socket(zmq.DEALER, identity)
    k_control, k_hb = socket(zmq.DEALER), socket(zmq.DEALER)
    k_iopub = socket(zmq.SUB)
    k_iopub.setsockopt(zmq.SUBSCRIBE, b"")
    for s, port in ((k_shell, "shell_port"), (k_stdin, "stdin_port"),
                    (k_control, "control_port"), (k_hb, "hb_port"), (k_iopub, "iopub_port")):
        s.connect(endpoint(spare, port))
    c_shell, c_stdin, c_control = socket(zmq.ROUTER), socket(zmq.ROUTER), socket(zmq.ROUTER)
    c_hb, c_iopub = socket(zmq.ROUTER), socket(zmq.PUB)
    try:
        for s, port in ((c_shell, "shell_port"), (c_stdin, "stdin_port"),
                        (c_control, "control_port"), (c_hb, "hb_port"), (c_iopub, "iopub_port")):
            s.bind(endpoint(jupyter, port))
    except zmq.ZMQError:
        for s in made:
            s.close(linger=0)
        ctx.term()
        raise
    # Serving from here on: this process is the kernel.
    log(f"kernel served by a warm spare ({'ready' if info['ready'] else 'still warming up'})")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()
    parent_ended = watch(parent, start_time(parent))

    def shift(msg_type, content):
        if msg_type not in COUNTED:
            return content
        c = json.loads(content)
        n, offset = c.get("execution_count"), counted["offset"]
        if isinstance(n, int) and n > offset:
            c["execution_count"] = n - offset
            return json.dumps(c).encode()
        return content

    def forward(frames, check, sign, to, downstream, iopub=False):
        try:
            relay(frames, check, sign, to, downstream, iopub)
        except Exception as e:  # one odd message must not end the student's kernel
            log(f"a message could not be passed on ({type(e).__name__}: {e})")

    # A spare claimed while it warms: evcxr takes the next request from any client once a cell
    # is done, so the student's requests wait here until the keeper marks the warm-up over (else
    # a cell could run between the warm-up's and lose its variables to its `:clear`). Meanwhile
    # the proxy answers kernel_info itself, with evcxr's answer to the keeper's request sent
    # before the warm-up (once it came): evcxr would answer Jupyter's only after the warm-up,
    # and Jupyter gives up on a kernel that is silent for 60 s.
    warming = {"on": not info["ready"], "held": [], "asked": [], "info": None}
    own_session = uuid.uuid4().hex

    def warm_up_over():
        if not warmed(folder):
            return False
        try:
            with open(os.path.join(folder, WARMED)) as f:
                counted["offset"] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            pass  # `ready`: every cell ran
        return True

    def kernel_info():
        """evcxr's kernel_info reply once the keeper has it (evcxr answers it a few seconds
        after it starts), else None."""
        if warming["info"] is None:
            try:
                with open(os.path.join(folder, KERNEL_INFO)) as f:
                    warming["info"] = json.load(f)
            except (OSError, ValueError):
                pass
        return warming["info"]

    def release():
        """The warm-up is over: evcxr answers everything from now on, held requests first."""
        warming["on"] = False
        for to, frames in [a[:2] for a in warming["asked"]] + warming["held"]:
            to.send_multipart(frames, copy=False)
        warming["asked"].clear()
        warming["held"].clear()

    def reply(idents, to, request_header, msg_type, content):
        header = {"msg_id": uuid.uuid4().hex, "session": own_session, "username": "llm-lab",
                  "date": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime()),
                  "msg_type": msg_type, "version": "5.3"}
        parts = [json.dumps(header).encode(), request_header, b"{}",
                 json.dumps(content).encode()]
        to.send_multipart(idents + [DELIMITER, to_client(parts)] + parts)

    def answer_kernel_info(idents, parts, to):
        topic = [b"kernel.llm-lab.status"]
        reply(topic, c_iopub, parts[0], "status", {"execution_state": "busy"})
        reply(idents, to, parts[0], "kernel_info_reply", kernel_info())
        reply(topic, c_iopub, parts[0], "status", {"execution_state": "idle"})

    def answer_asked():
        """Answers the kernel_info requests that came before evcxr's reply did."""
        if warming["asked"] and kernel_info() is not None:
            for _, _, idents, parts, to in warming["asked"]:
                answer_kernel_info(idents, parts, to)
            warming["asked"].clear()

    def relay(frames, check, sign, to, downstream, iopub):
        parsed = split(frames)
        if parsed is None:
            return
        idents, signature, parts, buffers = parsed
        if not hmac.compare_digest(signature, check(parts)):
            log("a message with a bad signature was dropped")
            return
        if not downstream and warming["on"] and to is not k_stdin:
            frames = idents + [DELIMITER, sign(parts)] + parts + buffers
            if json.loads(parts[0]).get("msg_type") == "kernel_info_request":
                client = c_shell if to is k_shell else c_control
                if kernel_info() is not None:
                    return answer_kernel_info(idents, parts, client)
                warming["asked"].append((to, frames, idents, parts, client))
                return
            if to is k_shell:
                warming["held"].append((k_shell, frames))
                return
        if downstream:
            if iopub and warmup_session:
                try:
                    if json.loads(parts[1]).get("session") == warmup_session:
                        return  # the warm-up's own output: not the student's
                except ValueError:
                    return
            try:
                msg_type = json.loads(parts[0]).get("msg_type")
                parts = [parts[0], parts[1], parts[2], shift(msg_type, parts[3])]
            except ValueError:
                return
        to.send_multipart(idents + [DELIMITER, sign(parts)] + parts + buffers, copy=False)

    beats = []  # identities of the heartbeats sent to the kernel, oldest first
    poller = zmq.Poller()
    for s in (c_shell, c_stdin, c_control, c_hb, k_shell, k_stdin, k_control, k_hb, k_iopub):
        poller.register(s, zmq.POLLIN)
    poller.register(evcxr_ended, zmq.POLLIN)
    if parent_ended is not None:
        poller.register(parent_ended, zmq.POLLIN)
    # Signed channels: where a message read on each socket goes, and how it is re-signed.
    routes = {
        c_shell: (from_client, to_kernel, k_shell, False),
        c_control: (from_client, to_kernel, k_control, False),
        c_stdin: (from_client, to_kernel, k_stdin, False),
        k_shell: (from_kernel, to_client, c_shell, True),
        k_control: (from_kernel, to_client, c_control, True),
        k_stdin: (from_kernel, to_client, c_stdin, True),
        k_iopub: (from_kernel, to_client, c_iopub, True),
    }
    closing_at = None
    while True:
        events = dict(poller.poll(200))
        if warming["on"]:
            answer_asked()
            if warm_up_over():
                release()
        for s, _ in list(events.items()):
            if s in routes:
                forward(s.recv_multipart(), *routes[s], iopub=s is k_iopub)
            elif s is c_hb:
                frames = s.recv_multipart()
                cut = frames.index(b"") if b"" in frames else len(frames)
                beats.append(frames[:cut])
                del beats[:-100]
                k_hb.send_multipart([b""] + frames[cut + 1:])
            elif s is k_hb:
                frames = s.recv_multipart()
                if beats:
                    c_hb.send_multipart(beats.pop(0) + [b""] + frames[1:])
            elif s == evcxr_ended or s == parent_ended:
                if closing_at is None:
                    # The last replies (a shutdown_reply) may still be on their way.
                    closing_at = time.monotonic() + 0.2
                poller.unregister(s)
        if closing_at is not None and time.monotonic() >= closing_at:
            break
    for s in made:
        s.close(linger=500)
    ctx.term()
    if parent_ended is not None and ended(parent_ended) and not ended(evcxr_ended):
        kill_group(info["evcxr_pid"])


def remove(spares, folder):
    """Removes a spare's folder, out of reach of any claim first."""
    gone = os.path.join(spares, f".gone-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        os.rename(folder, gone)
    except OSError:
        return
    shutil.rmtree(gone, ignore_errors=True)


def sweep(spares):
    """Removes the folders of spares whose keeper was killed before it could, and the lock and
    log files of keys nobody used for days (every server start makes new keys)."""
    for name in os.listdir(spares):
        path = os.path.join(spares, name)
        if name.endswith(".lock") and not os.path.isdir(path):
            try:
                if time.time() - os.stat(path).st_mtime < OLD_KEY:
                    continue
            except OSError:
                continue
            held = lock(path)
            if held is not None:
                for old in (path, path[:-len(".lock")] + ".log"):
                    try:
                        os.unlink(old)
                    except OSError:
                        pass
                held.close()
            continue
        if not os.path.isdir(path):
            continue
        try:
            with open(os.path.join(path, "info.json")) as f:
                info = json.load(f)
            owner, started = info["keeper_pid"], info["keeper_start"]
        except (OSError, ValueError, KeyError):
            # Being built (`KEY.new-PID`) or removed (`.gone-PID-…`) by process PID.
            m = re.search(r"\.new-(\d+)$", name) or re.match(r"\.gone-(\d+)-", name)
            if m is None:
                continue
            owner, started = int(m.group(1)), None
        now = start_time(owner)
        if now is None or (started is not None and now != started):
            remove(spares, path)


def unnice(group):
    """Gives a claimed spare (every thread of its process group) the priority of a kernel."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getpgid(int(pid)) != group:
                continue
            for task in os.listdir(f"/proc/{pid}/task"):
                os.setpriority(os.PRIO_PROCESS, int(task), 0)
        except OSError:
            pass


class Keeper:
    """One spare: its slot, its evcxr, its folder in the spares folder (see the file)."""

    def __init__(self, slots, evcxr, spares, key):
        self.slots, self.evcxr, self.spares, self.key = slots, evcxr, spares, key
        self.proc = self.dir_fd = self.slot_lock = self.key_lock = None

    def where(self):
        """The spare's folder wherever claims moved it."""
        return os.readlink(f"/proc/self/fd/{self.dir_fd}") if self.dir_fd is not None else None

    def cleanup(self, why):
        log(f"keeper {os.getpid()}: {why}; ending the spare")
        if self.proc is not None:
            kill_group(self.proc.pid)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        folder = self.where()
        if folder is not None and os.path.dirname(folder) == os.path.realpath(self.spares):
            remove(self.spares, folder)
        if self.slot_lock is not None:
            self.slot_lock.close()

    def run(self, watched_pid, watched_start, after=""):
        self.watched = watched_pid
        self.key_lock = lock(os.path.join(self.spares, self.key + ".lock"), wait=30)
        if self.key_lock is None:
            return  # another keeper's spare for this key is warming or waiting
        try:
            server = watch(watched_pid, watched_start)
            if server is None:
                return
            if after and not self.wait_warm(after, server):
                return
            name = os.path.join(self.spares, self.key)
            # Made first: a launch that finds it waits for the spare (see claim_starting).
            building = f"{name}.new-{os.getpid()}"
            os.makedirs(building)
            self.dir_fd = os.open(building, os.O_RDONLY | os.O_DIRECTORY)
            if os.path.exists(name):
                # The lock was free: its keeper died (and its evcxr with it).
                remove(self.spares, name)
            sweep(self.spares)
            folder, self.slot_lock = take_folder(self.slots)
            if folder is None:
                return self.cleanup("no build folder is free")
            connection = new_connection()
            # evcxr reads its own copy from the slot, a path no claim renames (it may read it
            # after the spare's folder became claimable); claimers read the spare's.
            control = os.path.join(folder, "llm-lab-spare-connection.json")
            for path in (control, os.path.join(building, "connection.json")):
                with open(path, "w") as f:
                    json.dump(connection, f)
            env = dict(os.environ, EVCXR_TMPDIR=folder)
            self.proc = subprocess.Popen(
                [self.evcxr, "--control_file", control],
                env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                pass_fds=[self.slot_lock.fileno()], preexec_fn=spare_child(may_unnice()),
                start_new_session=True)
            self.serve(server, building, name, connection)
        except Exception as e:
            self.cleanup(f"{type(e).__name__}: {e}")
            raise
        finally:
            self.key_lock.close()

    def serve(self, server, building, name, connection):
        import zmq

        evcxr_ended = watch(self.proc.pid, start_time(self.proc.pid))
        if evcxr_ended is None:
            return self.cleanup("evcxr did not start")
        cells = warmup_cells()
        session = uuid.uuid4().hex
        ctx = zmq.Context()
        shell = ctx.socket(zmq.DEALER)
        shell.linger = 0
        shell.connect(endpoint(connection, "shell_port"))
        sign = signer(connection)
        info = {"keeper_pid": os.getpid(), "keeper_start": start_time(os.getpid()),
                "evcxr_pid": self.proc.pid,
                "evcxr_start": start_time(self.proc.pid), "session": session,
                "offset": len(cells)}
        self.shell, self.sign, self.session = shell, sign, session
        # Asked before the warm-up's cells, which evcxr answers first: the claimer's proxy
        # answers Jupyter's kernel_info_request with it while the spare warms.
        self.info_id, parts = request(session, "kernel_info_request", {})
        shell.send_multipart([DELIMITER, sign(parts)] + parts)
        self.pending = {self.info_id}
        # One cell at a time, so that a claim can cut the warm-up short (see cut_short).
        self.queue, self.sent = list(cells), 0
        self.send_next()
        with open(os.path.join(building, "info.json"), "w") as f:
            json.dump(info, f)
        # Claimable from now on: a claimer's cells queue behind the warm-up.
        os.rename(building, name)
        started, failed = time.monotonic(), None
        recheck = started + RECHECK
        ready_at = None
        poller = zmq.Poller()
        poller.register(shell, zmq.POLLIN)
        poller.register(evcxr_ended, zmq.POLLIN)
        poller.register(server, zmq.POLLIN)
        while True:
            events = dict(poller.poll(250))
            if shell in events:
                failed = self.on_reply(take_reply(shell, self.pending)) or failed
                if failed is None:
                    self.send_next()
                if not self.pending and failed is None:
                    ready_at = time.monotonic()
                    self.mark("ready", f"{ready_at - started:.1f}")
                    log(f"keeper {os.getpid()}: spare warm in {ready_at - started:.1f} s")
            if evcxr_ended in events:
                return self.cleanup("its evcxr exited")
            if server in events:
                return self.cleanup("the Jupyter server that started it is gone")
            claimed = not self.at(name)
            if claimed:
                break
            if failed is not None or (self.pending and time.monotonic() - started > WARMUP_LIMIT):
                if self.retire(name):
                    return self.cleanup("its warm-up failed or did not end")
                break  # claimed in the meantime: the student's kernel goes on
            if ready_at is not None and time.monotonic() - ready_at > MAX_IDLE:
                if self.retire(name):
                    return self.cleanup(f"nobody claimed it in {MAX_IDLE:.0f} s")
                break
            if time.monotonic() >= recheck:
                recheck = time.monotonic() + RECHECK
                # An edited course crate: no launch will ask for this spare any more.
                if spare_key(self.evcxr, cells, self.watched) != self.key:
                    if self.retire(name):
                        return self.cleanup("the sources it compiled changed")
                    break
        # Claimed: the launcher that claimed it starts the next spare, which needs the key.
        self.key_lock.close()
        try:
            self.serve_claimer(evcxr_ended, server, started)
        finally:
            shell.close()
            ctx.term()

    def wait_warm(self, claimed, server):
        """Waits until the claimed spare in folder `claimed` is warm (or gone); False if the
        server ended meanwhile."""
        started = time.monotonic()
        while os.path.isdir(claimed) and time.monotonic() - started < WARMUP_LIMIT:
            if warmed(claimed):
                break
            if select.select([server], [], [], 0.25)[0]:
                return False
        log(f"keeper {os.getpid()}: starts after {time.monotonic() - started:.1f} s, once the "
            "claimed spare warmed")
        return True

    def send_next(self):
        """Sends the warm-up's next cell, unless one is running or none is left."""
        if not self.queue or len(self.pending - {self.info_id}) > 0:
            return
        msg_id, parts = request(self.session, "execute_request", {
            "code": self.queue.pop(0), "silent": False, "store_history": False,
            "user_expressions": {}, "allow_stdin": False, "stop_on_error": False})
        self.shell.send_multipart([DELIMITER, self.sign(parts)] + parts)
        self.pending.add(msg_id)
        self.sent += 1

    def cut_short(self):
        """A claimed spare's warm-up ends with the cell it runs: the student is waiting, and
        the next cells only do ahead what the student's own cells do anyway. Its last cell (the
        `:clear` that drops what the warm-up defined) still runs if any cell but the first
        (the lessons' setup cell, the student's own) was sent."""
        self.queue = self.queue[-1:] if self.sent > 1 else []

    def on_reply(self, taken):
        """Keeps evcxr's kernel_info reply (for the proxy); the id of a warm-up cell that
        failed, or None."""
        if taken is None:
            return None
        msg_id, content = taken
        if msg_id == self.info_id:
            self.mark(KERNEL_INFO, json.dumps(content))
            return None
        return None if content.get("status") == "ok" else msg_id

    def mark(self, name, text=""):
        """Writes the file `name` (whole: then renamed) into the spare's folder, wherever claims
        moved it."""
        tmp = os.path.join(self.where(), name + ".tmp")
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.rename(tmp, os.path.join(self.where(), name))

    def at(self, name):
        """Whether the spare's folder is still unclaimed under `name`."""
        try:
            return os.stat(name).st_ino == os.fstat(self.dir_fd).st_ino
        except OSError:
            return False

    def retire(self, name):
        """Takes the spare out of reach of claims; False if a claimer was first."""
        retired = os.path.join(self.spares, f".gone-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        try:
            os.rename(name, retired)
        except OSError:
            return False
        return True

    def serve_claimer(self, evcxr_ended, server, started):
        """Waits for the claimer to end, and tells its proxy (the marker WARMED, with the number
        of warm-up cells evcxr counted) once the warm-up is over: it holds the student's requests
        until then."""
        import zmq

        shell, pending = self.shell, self.pending
        self.cut_short()

        deadline, claimer = time.monotonic() + 10, None
        while claimer is None and time.monotonic() < deadline:
            try:
                with open("claimer.json", opener=lambda p, fl: os.open(p, fl, dir_fd=self.dir_fd)) as f:
                    c = json.load(f)
                claimer = watch(c["pid"], c["start"])
                if claimer is None:
                    return self.cleanup("its claimer exited at once")
            except (OSError, ValueError):
                time.sleep(0.05)
        if claimer is None:
            return self.cleanup("its claimer never said who it is")
        unnice(self.proc.pid)
        poller = zmq.Poller()
        for fd in (claimer, evcxr_ended, server):
            poller.register(fd, zmq.POLLIN)
        if pending:
            poller.register(shell, zmq.POLLIN)
        else:
            self.mark(WARMED, str(self.sent))
        why = {claimer: "its claimer exited", evcxr_ended: "its evcxr exited",
               server: "the Jupyter server that started it is gone"}
        while True:
            events = dict(poller.poll())
            if shell in events:
                self.on_reply(take_reply(shell, pending))
                self.send_next()
                if not pending:
                    poller.unregister(shell)
                    took = time.monotonic() - started
                    self.mark(WARMED, str(self.sent))
                    log(f"keeper {os.getpid()}: claimed spare warm in {took:.1f} s "
                        f"({self.sent} warm-up cells)")
                continue
            ended_fd = next((fd for fd in why if fd in events), None)
            if ended_fd is not None:
                return self.cleanup(why[ended_fd])


def keeper_main(args):
    slots, evcxr, spares, key, watched_pid, watched_start, after = args
    if os.fork() > 0:
        os._exit(0)  # the launcher waits for this one; the keeper goes on, reparented
    log(f"keeper {os.getpid()} for spare {key} started")
    Keeper(slots, evcxr, spares, key).run(int(watched_pid), int(watched_start), after)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--keeper":
        return keeper_main(sys.argv[2:])
    slots, evcxr, connection = sys.argv[1:4]
    slots = os.path.abspath(slots)
    env = dict(os.environ)
    try:
        os.makedirs(slots, exist_ok=True)
    except OSError:
        pass
    if connection == "--spare":
        # Only a spare for later kernels, that ends with the given process (e.g. the server).
        if not spares_enabled():
            sys.exit("llm-lab: spare kernels are off here")
        spares = os.path.join(pool_of(slots), SPARES)
        os.makedirs(spares, exist_ok=True)
        watched = int(sys.argv[4])
        key = spare_key(evcxr, warmup_cells(), watched)
        start_keeper(slots, evcxr, spares, key, watched)
        # Returns once the spare can be found (a launch waits for one being started).
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any(
                n == key or n.startswith(key + ".") and not n.endswith((".lock", ".log"))
                for n in os.listdir(spares)):
            time.sleep(0.02)
        return
    spares = key = None
    if spares_enabled():
        try:
            spares = os.path.join(pool_of(slots), SPARES)
            os.makedirs(spares, exist_ok=True)
            # The server that started this launch: the next spare ends with it.
            key = spare_key(evcxr, warmup_cells(), os.getppid())
            claimed = claim_starting(spares, key)
        except Exception as e:
            log(f"no spare kernel ({type(e).__name__}: {e})")
            spares = claimed = None
        if claimed is not None:
            keep_a_spare(slots, evcxr, spares, key, after=claimed[0])
            try:
                proxy(claimed, connection)
                return
            except Exception as e:
                log(f"the spare kernel could not be served ({type(e).__name__}: {e}); "
                    "starting a new kernel")
                # Its keeper sees its evcxr end and cleans up.
                kill_group(claimed[1]["evcxr_pid"])
            spares = None  # a spare was started above
    try:
        folder, held = take_folder(slots)
    except OSError as e:
        log(f"no build folder of its own for this kernel ({e}); it compiles in a temporary one")
        folder = held = None
    if spares is not None:
        # After this kernel took its build folder: the spare takes the next one.
        keep_a_spare(slots, evcxr, spares, key)
    if folder is not None:
        env["EVCXR_TMPDIR"] = folder
        # The lock is held as long as the kernel (and whatever inherits it) lives.
        os.set_inheritable(held.fileno(), True)
    # else: evcxr makes a temporary folder of its own (cold, but safe).
    os.execve(evcxr, [evcxr, "--control_file", connection], env)


def keep_a_spare(slots, evcxr, spares, key, after=""):
    try:
        start_keeper(slots, evcxr, spares, key, os.getppid(), after)
    except Exception as e:
        log(f"no spare kernel for the next kernel ({type(e).__name__}: {e})")


if __name__ == "__main__":
    main()
