# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags
#     formats: ipynb,py:percent
#     notebook_metadata_filter: kernelspec,jupytext
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (workshop .venv)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 08 — The scoreboard: every scenario on every stage
#
# The same battery as `make demo`: each scenario runs on a fresh deployment of each stage
# under 150 requests per second. Read it row by row — each stage fixes one column. Lost
# requests are counted by cause (`workshop/losses.py`). With `QUICK` only the rolling restarts
# and the crash run.

# %% tags=["parameters"]
BACKEND = "auto"
QUICK = False

# %%
import matplotlib.pyplot as plt

from workshop import notebook_setup, report, tour
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
stages = all_stages()
early = [s for s in stages if "graceful shutdown" not in tour.capabilities(s)]  # no SIGTERM handler
graceful = [s for s in stages if s not in early]
assert all(by[(s, "rolling-restart")].sigkills == 3 and by[(s, "rolling-restart")].rollout_s >= 30 for s in early)
assert all(by[(s, "rolling-restart")].lost_by_cause.get("going-away", 0) == 0 for s in stages)
assert all(by[(s, name)].sigkills == 0 and not {"going-away", "killed"} & set(by[(s, name)].lost_by_cause)
           for s in graceful for name in ("rolling-restart", "rolling-restart-init"))
assert all(by[(s, "crash")].crash_log_records == 1 for s in stages if "logging" in tour.capabilities(s))
if backend_name == "local":  # on a cluster the init-process loss is a race: none to a handful
    assert all(by[(s, "rolling-restart-init")].lost_by_cause.get("going-away", 0) > 0 for s in early)
