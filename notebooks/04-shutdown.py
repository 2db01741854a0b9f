# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3 (workshop .venv)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 04 — Graceful shutdown: a rolling restart that loses nothing
#
# Chapter: [stages/04-shutdown/README.md](../stages/04-shutdown/README.md). SIGTERM now
# reaches the poll loop through a self-pipe; the replica keeps answering through its
# `preStop` sleep (while clients learn it is leaving), drains what still arrives, flushes
# its replies and exits 0. Stage 03 against stage 04, same rolling restart, same load —
# once as the images run Python (PID 1), once under an init process (as with tini).

# %% tags=["parameters"]
BACKEND = "auto"
QUICK = False

# %%
import subprocess

import matplotlib.pyplot as plt

from workshop import notebook_setup, report
from workshop.parallel_runs import run_all
from workshop.stages import ROOT

backend_name = notebook_setup.choose_backend(BACKEND)
print(subprocess.run(["diff", "-u", "stages/03-probes/echo_server.py", "stages/04-shutdown/echo_server.py"],
                     cwd=ROOT, capture_output=True, text=True).stdout)

# %%
results = run_all(["03", "04"], ["rolling-restart", "rolling-restart-init"], backend=backend_name,
                  progress=print)
by = {(r.stage, r.scenario): r for r in results}
report.figure(results)
plt.show()
print(report.scoreboard(results))

# %% [markdown]
# Stage 03 as PID 1 loses next to nothing, but each old pod hangs on for the whole default grace
# period and is SIGKILLed; under an init process it dies at once and loses what was in
# flight. Stage 04 is the same either way: it keeps serving through `preStop`, drains,
# exits 0 within its 10 s grace period, and loses nothing.

# %%
for scenario in ("rolling-restart", "rolling-restart-init"):
    r = by[("04-shutdown", scenario)]
    assert r.lost == 0 and r.sent >= 5000 and r.sigkills == 0, "zero lost of thousands, no SIGKILL"
    assert max(r.pod_exit_s) <= 10, "every pod gone within the grace period it asks for"
assert by[("03-probes", "rolling-restart")].sigkills == 3 and by[("03-probes", "rolling-restart")].rollout_s >= 30
assert by[("03-probes", "rolling-restart-init")].lost > 0
