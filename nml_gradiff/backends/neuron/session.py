"""A NEURON process kept alive between runs of plans that share one mechanism library.

:func:`.run.simulate` starts a fresh process per run (NEURON cannot load a second
library into a process), which costs about a second of start-up (Python, NEURON, the
library) against 0.1-0.2 s of simulation for the small cells ``tune`` fits in every epoch.
A :class:`Session` starts ``python -m nml_gradiff.backends.neuron.session LIBRARY`` once and
sends it plan after plan; the child runs each with :func:`.runner.run`, exactly as a fresh
process would: every cell, shadow and recording is made from the plan and deleted after
the run (the child checks that no section survives a run, so one run cannot leak into the
next).

Protocol: the parent writes one line per run to the child's stdin, a JSON list
``[PLAN.json, OUT.npz]`` (JSON, so a temporary folder with spaces in its name still works),
and reads the child's stdout up to a line starting with ``nml-gradiff-session:`` (``ok``,
or ``error`` and the message); the child ends at end of input.  NEURON's own messages
and the runner's timing go to a log file, read back when a run fails.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tempfile
import traceback
import weakref
from pathlib import Path

import numpy as np

from ...errors import ModelError

_REPLY = "nml-gradiff-session:"


class Session:
    """One NEURON child process for ``library``; :meth:`run` returns the runner's arrays."""

    def __init__(self, library: Path):
        self.library = Path(library)
        self._tmp = tempfile.TemporaryDirectory(prefix="nml-gradiff-session-")
        self._log_path = Path(self._tmp.name) / "neuron.log"
        self._log = open(self._log_path, "w")
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "nml_gradiff.backends.neuron.session", str(self.library)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
            bufsize=1)
        self._finalizer = weakref.finalize(self, _stop, self._proc, self._log, self._tmp)

    def run(self, plan_data: dict) -> dict[str, np.ndarray]:
        folder = Path(self._tmp.name)
        plan_file, out_file = folder / "plan.json", folder / "out.npz"
        plan_file.write_text(json.dumps(plan_data))
        if self._proc.poll() is not None:
            raise ModelError(f"the NEURON session has ended:\n{self._tail()}")
        self._proc.stdin.write(json.dumps([str(plan_file), str(out_file)]) + "\n")
        self._proc.stdin.flush()
        reply = self._reply()
        if reply != "ok":
            raise ModelError(f"NEURON failed: {reply}\n{self._tail()}")
        with np.load(out_file) as data:
            return dict(data)

    def _reply(self) -> str:
        for line in self._proc.stdout:
            if line.startswith(_REPLY):
                return line[len(_REPLY):].strip()
        return "the NEURON process ended without a reply"

    def _tail(self) -> str:
        self._log.flush()
        return "\n".join(self._log_path.read_text().strip().splitlines()[-15:])

    def close(self) -> None:
        self._finalizer()


def _stop(proc, log, tmp) -> None:
    if proc.poll() is None:
        proc.stdin.close()           # end of input: the child returns
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    log.close()
    tmp.cleanup()


# --------------------------------------------------------------------------- the child

def serve(library: str) -> None:
    from neuron import h
    from . import runner
    for line in sys.stdin:
        plan_file, out_file = json.loads(line)
        try:
            with open(plan_file) as fh:
                runner.run(json.load(fh), library, out_file)
            _check_clean(h)
            reply = "ok"
        except Exception as exc:           # report, keep serving: the parent decides
            traceback.print_exc(file=sys.stderr)
            reply = "error " + " ".join(str(exc).split())
        sys.stderr.flush()
        print(f"{_REPLY} {reply}", flush=True)


def _check_clean(h) -> None:
    """Every object of the run is gone (some, e.g. a handler bound to a method of the
    shadows, sit in reference cycles: collect them)."""
    gc.collect()
    left = sum(1 for _ in h.allsec())
    if left:
        raise RuntimeError(f"{left} sections survived a run: the next would simulate them")


if __name__ == "__main__":
    serve(sys.argv[1])
