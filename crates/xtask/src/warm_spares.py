"""A Jupyter server extension of the course's lab: as the server starts, a spare kernel starts
warming for the lessons' folder, so that the first lesson's kernel is warm too.

Spares (see launch_kernel.py) are otherwise started by kernel launches: the first kernel of a
folder would be cold. `cargo xtask lab` installs this file in the lab's Python (`.venv`) and
turns it on in the lab's own Jupyter configuration. It asks the course's launcher, from inside
the server, for a spare that ends with the server: so the spare shares what a kernel launched by
this server has (its environment, its parent process, the notebook's folder) and the launch of
the lesson's kernel claims it. Nothing here may stop the server from starting: failures are
logged and forgotten. LLM_LAB_SPARE_KERNELS=0 turns it off, with the spares.
"""

import os
import subprocess

KERNEL = "llm-lab"
# The folders whose first kernel is warm: the lessons (where the lab opens).
FOLDERS = ["notebooks"]


def _jupyter_server_extension_points():
    return [{"module": __name__}]


def _load_jupyter_server_extension(app):
    if os.environ.get("LLM_LAB_SPARE_KERNELS") == "0":
        return
    try:
        spec = app.kernel_spec_manager.get_kernel_spec(KERNEL)
        python, launcher, slots, evcxr = spec.argv[:4]
    except Exception as e:  # no course kernel here: nothing to warm
        app.log.warning("llm-lab: no spare kernel warmed (%s)", e)
        return
    if not launcher.endswith("launch_kernel.py"):
        return
    # A kernel's environment: the server's, with its kernelspec's settings.
    env = dict(os.environ, **spec.env)
    folders = [os.path.join(app.root_dir, f) for f in FOLDERS]
    server = str(os.getpid())

    # Before the server serves (a fraction of a second): the lesson's kernel, asked for as soon
    # as JupyterLab opens it, finds the spare starting and waits for it.
    for folder in filter(os.path.isdir, folders):
        try:
            subprocess.run([python, launcher, slots, evcxr, "--spare", server], cwd=folder,
                           env=env, stdin=subprocess.DEVNULL, check=True, timeout=30)
            app.log.info("llm-lab: a spare kernel is warming for %s", folder)
        except Exception as e:
            app.log.warning("llm-lab: no spare kernel warmed for %s (%s)", folder, e)
