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
# # 02 — Logging: one crash, one record
#
# Chapter: [stages/02-logging/README.md](../stages/02-logging/README.md). Kubernetes collects
# stdout and stderr **line by line**. Stage 01's crash prints a traceback: a dozen lines,
# each its own record at the aggregator, mixed with other pods' lines. Stage 02 logs JSON,
# one record per line, and wraps `main()` so any crash becomes ONE record carrying the
# whole traceback.

# %% tags=["parameters"]
BACKEND = "auto"
QUICK = False

# %%
import json
import time

from workshop import lesson, notebook_setup, report
from workshop.backends import make_backend
from workshop.parallel_runs import run_all
from workshop.load_generator import LoadSpec

backend_name = notebook_setup.choose_backend(BACKEND)
print("backend:", backend_name)

# %% [markdown]
# What this stage adds to stage 01, as code (the chapter explains each part):

# %%
print(lesson.text("02"))

# %% [markdown]
# ## A crash, seen by the log collector
#
# A `crash` fault makes one replica raise. The scenario counts the log records the
# crashed container left between the crash and its restart — what `kubectl logs
# --previous` shows, one line one record.

# %%
results = run_all(["01", "02"], ["crash"], backend=backend_name, progress=print)
records = {r.stage: r.crash_log_records for r in results}
print(report.scoreboard(results))
print(records)

# %% [markdown]
# And here is that one record, from a replica we crash ourselves. The fault is sent by the
# load generator, from where the pods can be reached (on a cluster: a Job inside it), and
# the record is read the way `kubectl logs --previous` reads it: from the container that
# crashed, not the one that replaced it.

# %%
with make_backend(backend_name) as backend:
    backend.deploy("02", env={"ECHO_FAULTS": "1"})
    load = backend.start_load(LoadSpec(rate=50, max_s=3, fault="crash", fault_at_s=0.5))
    outcome = load.result()
    victim = outcome.fault.pod
    deadline = time.monotonic() + 30
    while next(p for p in backend.pods() if p.name == victim).restarts == 0:
        assert time.monotonic() < deadline, "the replica was not restarted"
        time.sleep(0.5)  # a look at the pods twice a second
    log = backend.logs(victim, previous=True)
crash_records = [json.loads(line) for line in log.splitlines() if line.startswith("{") and '"ERROR"' in line]
print(json.dumps(crash_records[0], indent=2))

# %%
assert records["02-logging"] == 1, "stage 02 leaves one record per crash"
assert records["01-plain"] > 5, "stage 01 scatters its traceback over many records"
assert "Traceback (most recent call last)" in crash_records[0]["exception"]
