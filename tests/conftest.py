import json
import signal
import socket
import subprocess
import sys

import pytest
import zmq

from kube_cluster import POD_NETWORK
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


@pytest.fixture
def pod_connections(monkeypatch):
    """Every attempt of this process to connect to a pod IP, over TCP or
    ZeroMQ; each attempt also fails, as it would from a minikube host."""
    attempts = []
    real_connect, real_connect_ex, real_zmq_connect = socket.socket.connect, socket.socket.connect_ex, zmq.Socket.connect

    def refuse(target):
        attempts.append(target)
        raise OSError(f"the host connected to a pod address: {target}")

    def connect(sock, address):
        if isinstance(address, tuple) and str(address[0]).startswith(POD_NETWORK):
            refuse(address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        if isinstance(address, tuple) and str(address[0]).startswith(POD_NETWORK):
            refuse(address)
        return real_connect_ex(sock, address)

    def zmq_connect(sock, endpoint):
        if POD_NETWORK in endpoint:
            refuse(endpoint)
        return real_zmq_connect(sock, endpoint)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(zmq.Socket, "connect", zmq_connect)
    return attempts
