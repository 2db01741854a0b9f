import json
import signal
import subprocess
import sys

import pytest

from support import ROOT, EchoServer
from workshop.scenarios import ScenarioResult

DEMO_TIMEOUT_S = 600

# Ctrl-C as a terminal delivers it. A shell's background job (a CI runner's,
# say) starts with SIGINT ignored, and an ignored signal stays ignored across
# exec: every process the tests start would then ignore the SIGINT the tests
# send it. A handler here becomes the default action again in them.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

pytest_plugins = ["services"]  # the rsyslog and Prometheus fixtures


@pytest.fixture
def start_server(tmp_path):
    """Start a stage's server; every one started is killed at the end of the test."""
    servers = []

    def start(stage, wait_ready=True, **env):
        server = EchoServer(stage, tmp_path, **env)
        servers.append(server)
        return server.start(wait_ready=wait_ready)

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def demo(tmp_path_factory):
    """`make demo`'s battery, run once for the session: every scenario on
    every stage, local backend. The scoreboard's tests read its lessons; the
    notebooks read its results instead of running them again (WORKSHOP_RESULTS)."""
    out = tmp_path_factory.mktemp("report")
    run = subprocess.run([sys.executable, "-m", "workshop", "demo", "--out", str(out)], cwd=ROOT,
                         capture_output=True, text=True, timeout=DEMO_TIMEOUT_S)
    assert run.returncode == 0, run.stderr
    results = [ScenarioResult(**r) for r in json.loads((out / "results.json").read_text())]
    return {"out": out, "stdout": run.stdout, "results_json": out / "results.json",
            "results": {(r.stage, r.scenario): r for r in results}}
