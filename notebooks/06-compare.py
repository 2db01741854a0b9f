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
# # 06 — The scoreboard: every scenario on every stage
#
# The same battery as `make demo`: each scenario runs on a fresh deployment of each stage
# under 500 requests per second. Read it row by row — each stage fixes one column.
# With `QUICK` only the rolling restarts and the crash run.

# %% tags=["parameters"]
BACKEND = "auto"
QUICK = False

# %%
import matplotlib.pyplot as plt

from workshop import notebook_setup, report
from workshop.parallel_runs import run_all
from workshop.scenarios import SCENARIOS
from workshop.stages import all_stages

backend_name = notebook_setup.choose_backend(BACKEND)
scenarios = ["rolling-restart", "rolling-restart-init", "crash"] if QUICK else list(SCENARIOS)
results = run_all(all_stages(), scenarios, backend=backend_name, progress=print)

# %%
print(report.scoreboard(results))

# %%
report.figure(results)
plt.show()

# %%
by = {(r.stage, r.scenario): r for r in results}
early, graceful = ("01-plain", "02-logging", "03-probes"), ("04-shutdown", "05-metrics")
assert all(by[(s, "rolling-restart")].sigkills == 3 and by[(s, "rolling-restart")].rollout_s >= 30 for s in early)
assert all(by[(s, "rolling-restart-init")].lost > 0 for s in early)
assert all(by[(s, name)].lost == 0 and by[(s, name)].sigkills == 0
           for s in graceful for name in ("rolling-restart", "rolling-restart-init"))
assert all(by[(s, "crash")].crash_log_records == 1 for s in all_stages() if s >= "02")
