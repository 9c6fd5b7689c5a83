"""Executes one notebook on a Jupyter kernel, cell by cell, for `cargo xtask`.

Unlike `jupyter nbconvert --execute`, it always writes what ran (a cell that times out or a kernel
that dies keeps the outputs of the cells before it) and says how the run ended in a JSON file.
xtask starts it in a process group of its own and removes every process it left behind.

A student's notebook (STOP_ON_ERROR=0) runs every cell: a cell past its time limit is interrupted
(evcxr kills the process that runs the code, so variables are lost, functions stay) and the run
goes on; the cells that timed out are listed in the status.

usage: python run_notebook.py IN.ipynb OUT.ipynb STATUS.json KERNEL CELL_TIMEOUT DEP_TIMEOUT STOP_ON_ERROR
"""

import json
import sys

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError


# The error name of the reply nbclient makes up for a cell it interrupted after its time limit.
TIMEOUT = "LlmLabCellTimeout"


def main():
    src, out, status_path, kernel = sys.argv[1:5]
    cell_timeout, dep_timeout = int(sys.argv[5]), int(sys.argv[6])
    stop_on_error = sys.argv[7] == "1"
    nb = nbformat.read(src, as_version=4)
    # Only what runs now counts: outputs saved in the file (stale, or typed in by hand) go.
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None

    def timeout_of(cell):
        # `:dep` cells compile crates: their time is the machine's, not the student's code's.
        return dep_timeout if cell.source.lstrip().startswith(":dep") else cell_timeout

    timeouts = []

    def on_cell_error(cell, cell_index, execute_reply):
        if execute_reply["content"].get("ename") == TIMEOUT:
            timeouts.append(cell_index)

    client = NotebookClient(
        nb,
        interrupt_on_timeout=not stop_on_error,
        error_on_timeout={"ename": TIMEOUT, "evalue": "time limit", "traceback": []},
        on_cell_error=on_cell_error,
        kernel_name=kernel,
        timeout_func=timeout_of,
        startup_timeout=120,
        allow_errors=not stop_on_error,
        # The kernel is killed at once when the run ends: xtask sweeps what remains anyway.
        shutdown_kernel="immediate",
        resources={"metadata": {"path": "."}},
    )
    status = {"stopped": None, "cell": None, "message": "", "timeouts": timeouts}
    client.reset_execution_trackers()
    try:
        with client.setup_kernel():
            for index, cell in enumerate(nb.cells):
                status["cell"] = index
                try:
                    client.execute_cell(cell, index)
                except CellTimeoutError as e:
                    status.update(stopped="timeout", message=str(e).splitlines()[0])
                    break
                except DeadKernelError as e:
                    status.update(stopped="dead", message=str(e))
                    break
                except CellExecutionError as e:
                    lines = str(e).strip().splitlines()
                    status.update(stopped="error", message=lines[-1] if lines else "")
                    break
            else:
                status["cell"] = None
    except Exception as e:  # the kernel did not start, or died while being set up
        status.update(stopped="kernel", message=f"{type(e).__name__}: {e}")
    nbformat.write(nb, out)
    with open(status_path, "w", encoding="utf-8") as f:
        json.dump(status, f)


if __name__ == "__main__":
    main()
