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
# # 09 — The client's half: what a client owes the platform
#
# Chapter: [docs/client.md](../docs/client.md). No probe acts faster than its period times
# its threshold: a hung replica stays in the endpoints for 20 s with 04's liveness probe, and
# for ever without one. A client that keeps deadlines acts in a tenth of a second
# (`workshop/resilience.py`):
#
# - **a deadline per attempt** (0.1 s), well under the 1 s after which a request is lost;
# - **a retry only where it is safe**: the echo is idempotent, so a timed-out attempt is sent
#   again to another replica. A request that changes something is not retried blindly —
#   HTTP names its idempotent methods (GET, PUT, DELETE; not POST), gRPC retries only what
#   its service config lists, and a write made safe to repeat carries an idempotency key;
# - **a retry budget**: retries at most a tenth of the last second's requests (plus 5);
# - **ejection**: three time-outs in a row take a replica out for a back-off (1 s, doubling
#   to 8 s); then one request probes it.

# %% tags=["parameters"]
BACKEND = "auto"
QUICK = False

# %%
import matplotlib.pyplot as plt

from workshop import notebook_setup, report
from workshop.load_generator import LoadGenerator
from workshop.parallel_runs import run_all
from workshop.resilience import Resilience
from workshop.slow_replica import SlowReplicas

backend_name = notebook_setup.choose_backend(BACKEND)
print("backend:", backend_name)

# %% [markdown]
# ## A hung replica, two clients in the same run
#
# The `hang` scenario freezes one replica's loop under load. Beside the endpoint-aware client
# (which keeps no deadline: a request is lost after 1 s), a resilient client sends the same
# rate to the same replicas. On 02 (no probes) the hung replica is never taken out; on 04 a
# liveness kill takes it out after about 20 s.

# %%
results = run_all(["02", "04"], ["hang"], backend=backend_name, progress=print)
print(report.scoreboard(results))
rows = {r.stage: r for r in results}
fig, ax = plt.subplots(figsize=(7, 3))
for i, (stage, r) in enumerate(rows.items()):
    ax.bar(i - 0.2, r.lost, width=0.4, color="tab:red", label="endpoint-aware" if i == 0 else None)
    ax.bar(i + 0.2, r.resilient_lost, width=0.4, color="tab:green", label="resilient" if i == 0 else None)
ax.set_xticks(range(len(rows)), list(rows))
ax.set_ylabel("requests lost")
ax.set_title("a hung replica, the same run")
ax.legend()
plt.show()

# %% [markdown]
# What the resilient client paid: its retries (a few per ejection: the three attempts that
# timed out, then one probe per back-off), as a share of what it sent.

# %%
for stage, r in rows.items():
    print(f"{stage}: lost {r.lost} vs {r.resilient_lost}; {r.retries} retries "
          f"(+{r.retries / r.resilient_sent:.1%} load), {r.ejections} ejections")

# %% [markdown]
# ## A retry storm, and the budget that stops it
#
# Retries help when *one* replica is bad. When every replica is slow — the whole cluster
# overloaded — a retry goes to a replica as slow as the first, and only adds load. Below,
# three replicas that answer every request 150 ms late (`workshop/slow_replica.py`: past the
# 0.1 s deadline, well within the 1 s loss threshold), and the same load three times: plain,
# resilient without a budget, resilient with it. These replicas run in this process,
# whatever the backend: the storm is the client's own doing.

# %%
seconds = 1 if QUICK else 3
policies = {"plain": None, "no budget": Resilience(budget_ratio=None), "budget": Resilience()}
with SlowReplicas(delay_s=0.15) as slow:
    storm = {name: LoadGenerator(slow.feed, rate=150, resilience=policy).run(seconds)
             for name, policy in policies.items()}
for name, r in storm.items():
    latencies = sorted(s[1] for s in r.samples if s[1] is not None)
    print(f"{name:>9}: sent {r.sent}, lost {r.lost}, retries {r.retries} -> "
          f"{(r.sent + r.retries) / r.sent:.2f} attempts per request, p50 {latencies[len(latencies) // 2] * 1000:.0f} ms")

# %%
fig, ax = plt.subplots(figsize=(7, 3))
ax.bar(list(storm), [(r.sent + r.retries) / r.sent for r in storm.values()])
ax.set_ylabel("attempts per request")
ax.set_title("every replica slow: what retries add")
plt.show()

# %%
assert all(r.resilient_lost == 0 < r.lost for r in rows.values()), "the hung replica costs the resilient client nothing"
assert all(r.retries <= 0.1 * r.resilient_sent + 5 * (r.duration_s + 1) for r in rows.values()), "within budget"
unbudgeted, budgeted = storm["no budget"], storm["budget"]
assert unbudgeted.retries >= 0.9 * unbudgeted.sent and unbudgeted.lost == 0, "without a budget: twice the load, for nothing"
assert budgeted.retries <= 0.1 * budgeted.sent + 5 * (seconds + 1), "the budget holds retries to a tenth"
