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
# its replies and exits 0. Stage 03 against stage 04, same rolling restart, same load.

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
results = run_all(["03", "04"], ["rolling-restart"], backend=backend_name, quick=QUICK, progress=print)
by = {r.stage: r for r in results}
report.figure(results)
plt.show()
print(report.scoreboard(results))

# %%
assert by["04-shutdown"].lost == 0 and by["04-shutdown"].sent >= 5000, "zero lost of thousands"
assert by["03-probes"].lost > 0
