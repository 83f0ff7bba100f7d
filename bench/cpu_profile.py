"""Run a module under cProfile timed by its thread's CPU clock (``bench/http.py --profile``).

``python bench/cpu_profile.py OUT.prof -m module [args...]`` runs ``module`` as
``__main__`` and writes the profile to ``OUT.prof`` when it returns (a host returns on
SIGTERM). The clock is ``time.thread_time``: the main (event-loop) thread's own CPU
time, so time spent waiting, or preempted while another process on the same core runs
(a write on a loopback socket wakes the peer at once), is not charged to the function
that happened to be on the stack, as it is with cProfile's default wall clock.
"""

from __future__ import annotations

import cProfile
import os
import runpy
import sys
import time
from pathlib import Path


def main() -> None:
    if len(sys.argv) < 4 or sys.argv[2] != "-m":
        raise SystemExit("usage: cpu_profile.py OUT.prof -m module [args...]")
    out, module = sys.argv[1], sys.argv[3]
    sys.argv = [module, *sys.argv[4:]]
    # As ``python -m`` would: the working directory first, not bench/ (whose http.py
    # would shadow the standard library's http package).
    here = Path(__file__).resolve().parent
    sys.path[:] = ["", *(p for p in sys.path if Path(p or os.curdir).resolve() != here)]
    profiler = cProfile.Profile(time.thread_time)
    profiler.enable()
    try:
        runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        profiler.disable()
        profiler.dump_stats(out)


if __name__ == "__main__":
    main()
