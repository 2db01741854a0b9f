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
# # 07 — Settings: every one checked at start-up
#
# Chapter: [stages/07-settings/README.md](../stages/07-settings/README.md). Crash-only
# configuration catches a setting the code cannot use; it runs with one it can use wrongly.
# Each value below is given to stage 06 (crash-only) and stage 07 (checked), and we read how
# each process ends. A start-up check needs no cluster, so these cells run the processes
# here, whatever the backend; on a cluster the same line is what `kubectl logs` shows for a
# pod in CrashLoopBackOff.

# %% tags=["parameters"]
BACKEND = "auto"
QUICK = False

# %%
import json
import os
import subprocess
import sys

from workshop import lesson
from workshop.process import free_port
from workshop.stages import stage_dir

print(lesson.text("07"))


def start(stage, name, value, wait_s=3):
    """How the stage ends with `name=value`: its exit code (None: still running after
    `wait_s`; then it is sent SIGTERM, and SIGKILL if that does not end it) and its first record."""
    env = {**os.environ, "ECHO_BIND": f"tcp://127.0.0.1:{free_port()}", "METRICS_PORT": str(free_port()),
           name: value}
    process = subprocess.Popen([sys.executable, "echo_server.py"], cwd=stage_dir(stage), env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = process.communicate(timeout=wait_s)
        code = process.returncode
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            output, _ = process.communicate(timeout=wait_s)
        except subprocess.TimeoutExpired:  # its drain never ends: see below
            process.kill()
            output, _ = process.communicate()
        code = None
    first = json.loads(output.splitlines()[0])["message"] if output.strip().startswith("{") else output.strip()
    return code, first


# %%
# A port over 65535: 65536 + a free one, which libzmq takes as that free one.
cases = [("ECHO_BIND", f"tcp://127.0.0.1:{65536 + free_port()}"), ("DRAIN_QUIET_MS", "-1"), ("LOG_LEVEL", "bogus")]
ended = {(stage, name): start(stage, name, value) for stage in ("06", "07") for name, value in cases}
for (stage, name), (code, first) in ended.items():
    print(f"{stage} {name:<15} {'still running' if code is None else f'exit {code}'}: {first[:110]}")

# %% [markdown]
# 06 runs with a port over 65535 (libzmq takes it modulo 65536) and with a negative quiet
# period — whose drain then waits for ever: here SIGTERM did not end it, SIGKILL did, as the
# kubelet's would at the end of the grace period — and crashes with a traceback record on a
# level name it cannot look up. 07 refuses all three in one record that names the setting,
# exit code 2.

# %%
assert ended[("06", "ECHO_BIND")][0] is None and ended[("06", "DRAIN_QUIET_MS")][0] is None, "06 runs with them"
assert ended[("06", "LOG_LEVEL")][0] == 1, "06 crashes on what it cannot use"
for name, _ in cases:
    code, first = ended[("07", name)]
    assert code == 2 and first.startswith(f"bad setting {name}="), (name, code, first)
