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
# # 03 — Probes: no traffic before ready, no traffic to the stuck
#
# Chapter: [stages/03-probes/README.md](../stages/03-probes/README.md). Two failures,
# measured on stage 02 (no probes) and stage 03:
#
# - **slow start**: a rollout to replicas that need 2 s to initialise. Without a readiness
#   probe a pod is "ready" as soon as its process runs — requests go to it and wait for
#   the socket. *Early* requests are those sent to a replica well before it first answered.
# - **hang**: one replica's loop freezes; its process lives. Without a liveness probe it
#   keeps its share of the traffic for ever. With one, the kubelet kills it once two
#   checks 5 s apart have failed — but the kill waits for the grace period (30 s: Python as
#   PID 1 ignores SIGTERM), and all that time the TCP readiness probe still passes
#   (libzmq's I/O thread accepts connections for a frozen loop). So it leaves rotation
#   only when the kill is done, about 40 s after it froze.

# %% tags=["parameters"]
BACKEND = "auto"
QUICK = False

# %%
import matplotlib.pyplot as plt

from workshop import notebook_setup, report
from workshop.parallel_runs import run_all

backend_name = notebook_setup.choose_backend(BACKEND)
results = run_all(["02", "03"], ["slow-start", "hang"], backend=backend_name, progress=print)
by = {(r.stage, r.scenario): r for r in results}
print(report.scoreboard(results))

# %% [markdown]
# Latency over time. In *slow-start*, stage 02's requests wait up to 2 s for the new
# replicas' sockets; stage 03's never do. In *hang*, stage 02 loses everything sent to the
# frozen replica until the end (marks above the line); stage 03's losses stop when the
# liveness kill is done.

# %%
report.figure(results)
plt.show()
hung = by[("03-probes", "hang")]
print(f"stage 03: hung replica out of rotation after {hung.recover_s} s; "
      f"stage 02: {by[('02-logging', 'hang')].recover_s or 'never'}")

# %%
assert by[("03-probes", "slow-start")].early == 0, "readiness gating: nothing sent before ready"
assert by[("02-logging", "slow-start")].early > 0
# liveness: two failures 5 s apart (+ the 3 s timeout); then the kill: the 30 s grace period
assert hung.recover_s is not None and 5 + 30 <= hung.recover_s <= 3 * 5 + 3 + 30 + 1.5
assert by[("02-logging", "hang")].recover_s is None
