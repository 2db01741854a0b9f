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
# # 03 — Probes: no traffic before ready, no traffic to the stuck
#
# Chapter: [stages/03-probes/README.md](../stages/03-probes/README.md). Two failures,
# measured on stage 02 (no probes) and stage 03:
#
# - **slow start**: a rollout to replicas that need 2 s to initialise. Without a readiness
#   probe a pod is "ready" as soon as its process runs — requests go to it and wait for
#   the socket. *Early* requests are those sent to a replica well before it first answered.
# - **hang**: one replica's loop freezes; its process lives. Without a liveness probe it
#   keeps its share of the traffic for ever. With one, it is out of rotation once two
#   checks 5 s apart have failed.

# %% tags=["parameters"]
BACKEND = "auto"
QUICK = False

# %%
import matplotlib.pyplot as plt

from workshop import notebook_setup, report
from workshop.parallel_runs import run_all

backend_name = notebook_setup.choose_backend(BACKEND)
results = run_all(["02", "03"], ["slow-start", "hang"], backend=backend_name, quick=QUICK, progress=print)
by = {(r.stage, r.scenario): r for r in results}
print(report.scoreboard(results))

# %% [markdown]
# Latency over time. In *slow-start*, stage 02's requests wait up to 2 s for the new
# replicas' sockets; stage 03's never do. In *hang*, stage 02 loses everything sent to the
# frozen replica until the end (marks above the line); stage 03's losses stop when
# liveness takes it out.

# %%
report.figure(results)
plt.show()
hung = by[("03-probes", "hang")]
print(f"stage 03: hung replica out of rotation after {hung.recover_s} s; "
      f"stage 02: {by[('02-logging', 'hang')].recover_s or 'never'}")

# %%
assert by[("03-probes", "slow-start")].early == 0, "readiness gating: nothing sent before ready"
assert by[("02-logging", "slow-start")].early > 0
assert hung.recover_s is not None and hung.recover_s <= 2 * 5 + 3 + 1.5, "bounded by the probe settings"
assert by[("02-logging", "hang")].recover_s is None
