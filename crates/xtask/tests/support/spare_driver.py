"""Drives the course's spare-kernel provisioner with a temporary pool and kernelspec, for
tests/spare.rs.

usage: python spare_driver.py SCENARIO WORKDIR OUT.json
The kernelspec `llm-lab-spare-test` (in WORKDIR/jupyter, found through JUPYTER_PATH) runs the
launcher on the pool WORKDIR/pool through the provisioner `llm-lab-spares`; kernels start in
WORKDIR/work. Jupyter's own AsyncKernelManager drives them, as the server does (spares are forced
on: this is not a server). Each scenario writes what it saw to OUT.json for the test to judge;
the test asserts, not this script.
"""

import asyncio
import json
import logging
import os
import signal
import sys
import time

from jupyter_client.manager import AsyncKernelManager

KERNEL = "llm-lab-spare-test"
CELLS = ["let a = 40 + 2;", "a", 'println!("hi {}", a);', 'let b: u8 = "x";', ":vars"]
LOG = []


class Collect(logging.Handler):
    def emit(self, record):
        LOG.append(record.getMessage())


async def start(cwd):
    km = AsyncKernelManager(kernel_name=KERNEL)
    await km.start_kernel(cwd=cwd)
    return km, await client(km)


async def client(km):
    kc = km.client()
    kc.start_channels()
    await kc.wait_for_ready(timeout=300)
    return kc


async def run(kc, code, timeout=120):
    """Executes `code`: the reply's count and status, and the text of its outputs."""
    out, errors, counts = [], [], []

    def hook(msg):
        t, c = msg["msg_type"], msg["content"]
        if t == "stream":
            out.append(c["text"])
        elif t == "execute_result":
            out.append(c["data"].get("text/plain", ""))
        elif t == "execute_input":
            counts.append(c["execution_count"])
        elif t == "error":
            errors.append(c["evalue"])

    reply = await kc.execute_interactive(code, output_hook=hook, timeout=timeout)
    return {"code": code, "count": reply["content"]["execution_count"],
            "input_count": counts[0] if counts else None, "status": reply["content"]["status"],
            "output": "".join(out), "errors": errors}


def spares():
    import llm_lab_spares

    return llm_lab_spares._spares


async def warm_spare(limit=600):
    """The spare of the only key, once warm."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        for spare in list(spares().values()):
            if spare.warm.done():
                if spare.warm.result():
                    return spare
                raise RuntimeError("the spare failed to warm up: " + " | ".join(LOG))
        await asyncio.sleep(0.2)
    raise TimeoutError("no spare warmed: " + " | ".join(LOG))


def nice(pid):
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[16])


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


async def wait_gone(pid, limit=30):
    deadline = time.monotonic() + limit
    while alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    return not alive(pid)


async def scenario(name, work, result, kernels):
    async def new():
        km, kc = await start(work)
        kernels.append((km, kc))
        return km, kc

    if name == "handed":
        km, kc = await new()
        result["cold"] = [await run(kc, c) for c in CELLS]
        spare = await warm_spare()
        pid = spare.process.pid
        result["nice_waiting"] = nice(pid)
        km2, kc2 = await new()
        result["handed"] = km2.provisioner.pid == pid
        result["nice_handed"] = nice(pid)
        result["spare"] = [await run(kc2, c) for c in CELLS]
        result["beating"] = [await kc.is_alive(), await kc2.is_alive()]
        kc2.stop_channels()
        await km2.shutdown_kernel(now=True)
        kernels.remove((km2, kc2))
        result["spare_gone_after_shutdown"] = await wait_gone(pid)
        with open(os.path.join(os.path.dirname(work), "pool", ".cargo", "config.toml")) as f:
            result["deps_profile"] = f.read()
    elif name == "warming":
        await new()
        km2, kc2 = await new()
        first_spare = next(iter(spares().values()))
        result["second_cold"] = km2.provisioner.pid != first_spare.process.pid
        result["spare_kept"] = list(spares().values()) == [first_spare]
        spare = await warm_spare()
        result["same_spare_warmed"] = spare is first_spare
        km3, kc3 = await new()
        result["third_handed"] = km3.provisioner.pid == spare.process.pid
        result["third"] = await run(kc3, "1 + 1")
    elif name == "restart":
        km, kc = await new()
        old = km.provisioner.pid
        spare = await warm_spare()
        await km.restart_kernel(now=False)
        kc.stop_channels()
        kc = await client(km)
        kernels[-1] = (km, kc)
        result["restarted_on_spare"] = km.provisioner.pid == spare.process.pid
        result["old_gone"] = await wait_gone(old)
        result["after"] = await run(kc, "2 * 21")
    elif name == "interrupt":
        await new()
        await warm_spare()
        km, kc = await new()
        msg_id = kc.execute("std::thread::sleep(std::time::Duration::from_secs(60));")
        await asyncio.sleep(8)
        t = time.monotonic()
        await km.interrupt_kernel()
        while True:
            reply = await kc.get_shell_msg(timeout=50)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        result["interrupted_after"] = time.monotonic() - t
        result["status"] = reply["content"]["status"]
        result["after"] = await run(kc, "1 + 1")
    elif name == "idle":
        await new()
        spare = await warm_spare()
        result["spare_gone"] = await wait_gone(spare.process.pid, 30)
        result["spares_left"] = len(spares())
    elif name == "changed":
        src = os.path.join(os.path.dirname(work), "src")
        await new()
        spare = await warm_spare()
        time.sleep(1)  # a modification time the file system tells apart
        with open(os.path.join(src, "lib.rs"), "w") as f:
            f.write("// v2\n")
        km2, _ = await new()
        result["second_cold"] = km2.provisioner.pid != spare.process.pid
        result["stale_gone"] = await wait_gone(spare.process.pid, 30)
    elif name == "killed":
        # The driver (a server) is killed: its kernel and its spare end with it (Linux).
        km, _ = await new()
        spare = await warm_spare()
        result["pids"] = [km.provisioner.pid, spare.process.pid]
        write(result)
        os.kill(os.getpid(), signal.SIGKILL)
    elif name == "exit":
        # The driver shuts its kernel down and exits, as a server does: its spare ends with it.
        await new()
        spare = await warm_spare()
        result["pids"] = [spare.process.pid]
    else:
        raise ValueError(f"unknown scenario {name}")


def write(result):
    result["log"] = LOG
    with open(OUT, "w") as f:
        json.dump(result, f)


async def main(name, workdir):
    logger = logging.getLogger("llm_lab_spares")
    logger.setLevel(logging.INFO)
    logger.addHandler(Collect())
    work = os.path.join(workdir, "work")
    result, kernels = {"error": None}, []
    try:
        await scenario(name, work, result, kernels)
    except Exception as e:
        result["error"] = f"{type(e).__name__}: {e}"
    finally:
        for km, kc in kernels:
            kc.stop_channels()
            try:
                await km.shutdown_kernel(now=True)
            except Exception:
                pass
        write(result)


if __name__ == "__main__":
    os.environ["LLM_LAB_SPARE_KERNELS"] = "1"
    OUT = sys.argv[3]
    asyncio.run(main(sys.argv[1], sys.argv[2]))
