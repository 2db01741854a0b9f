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
# # 06 — Limits: no client can take a replica down
#
# Chapter: [stages/06-limits/README.md](../stages/06-limits/README.md). The talk's stages
# trust their clients. Here one client sends megabyte frames to one replica and never reads:
# stage 05 echoes them and queues the echoes it cannot send until the kernel kills it at its
# Deployment's 256 MiB memory limit — with the requests it was serving. Stage 06 drops that
# peer at its first frame and holds. On a cluster the limit is the kubelet's and the kills are
# read from each pod's last state (`OOMKilled`); locally each container runs in a memory cgroup
# of its limit, where this machine allows one (root): elsewhere the result says why it has no
# figure rather than let the attack take this machine's memory.

# %% tags=["parameters"]
BACKEND = "auto"
QUICK = False

# %%
import matplotlib.pyplot as plt

from workshop import lesson, notebook_setup, report
from workshop.parallel_runs import run_all

backend_name = notebook_setup.choose_backend(BACKEND)
print(lesson.text("06"))

# %%
results = run_all(["05", "06"], ["hostile-client"], backend=backend_name, progress=print)
by = {r.stage: r for r in results}
print(report.scoreboard(results))
report.figure(results)
plt.show()

# %% [markdown]
# Lost requests by cause: *killed* — sent to the replica while its container was dead or
# dying; *attacked* — sent to it while the hostile client was at it and before it died. The
# other two replicas answered throughout: the endpoint-aware client spreads the load, and
# the kubelet restarts the victim (then backs off: CrashLoopBackOff).

# %%
for stage, r in by.items():
    print(f"{stage}: {r.no_figure or f'{r.oom_kills} OOM kills, lost {r.lost} of {r.sent}: {r.lost_by_cause}'}")

# %%
if by["05-metrics"].no_figure is None:
    assert by["05-metrics"].oom_kills >= 1, "without limits one client gets the replica OOM-killed"
    assert by["06-limits"].oom_kills == 0 and by["06-limits"].restarts == 0, "with limits it holds"
    assert not {"killed", "attacked"} & set(by["06-limits"].lost_by_cause)
else:
    print("no figure here:", by["05-metrics"].no_figure)
