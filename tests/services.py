"""Real system services started by the tests on loopback: rsyslog, Prometheus.

Outside CI a missing program skips its tests with a clear message; with
CI=true a missing one fails them, because .ci/run is meant to install it.
"""

import json
import os
import shutil
import socket
import subprocess
from urllib.parse import urlencode
from urllib.request import urlopen

import pytest

from support import free_port, wait_for


def require_program(name, package):
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin")
    if path:
        return path
    message = f"{name} is not installed (Debian package '{package}'; `make setup` installs it)"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


class Rsyslog:
    """rsyslogd in the foreground, receiving UDP on loopback, writing each
    received message (the MSG part only) as one line of a file."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.port = free_port()
        self.received = workdir / "received.log"
        config = workdir / "rsyslog.conf"
        config.write_text(
            f'global(workDirectory="{workdir}")\n'
            'module(load="imudp")\n'
            f'input(type="imudp" address="127.0.0.1" port="{self.port}")\n'
            'template(name="message_only" type="string" string="%msg%\\n")\n'
            f'action(type="omfile" file="{self.received}" template="message_only")\n'
        )
        binary = require_program("rsyslogd", "rsyslog")
        self.process = subprocess.Popen(
            [binary, "-n", "-f", str(config), "-i", str(workdir / "rsyslog.pid")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self._wait_until_receiving()

    def _wait_until_receiving(self):
        marker = b"<14>1 - - test - - - rsyslog-ready"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            def marker_arrived():
                udp.sendto(marker, ("127.0.0.1", self.port))
                return self.received.exists() and "rsyslog-ready" in self.received.read_text()
            wait_for(marker_arrived, timeout=10, interval=0.05, message="rsyslog to receive")

    def lines(self):
        if not self.received.exists():
            return []
        return [line for line in self.received.read_text().splitlines() if "rsyslog-ready" not in line]

    def records(self):
        return [json.loads(line.strip()) for line in self.lines()]

    def stop(self):
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def rsyslog(tmp_path):
    receiver = Rsyslog(tmp_path)
    yield receiver
    receiver.stop()


class Prometheus:
    """A real Prometheus server on loopback, scraping the given targets every second."""

    def __init__(self, workdir, targets):
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
            "scrape_configs:\n  - job_name: echo\n    static_configs:\n"
            f"      - targets: {json.dumps(targets)}\n"
        )
        binary = require_program("prometheus", "prometheus")
        self.process = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def query(self, expression):
        """The instant vector's values, or [] while the server is not up yet."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urlencode({"query": expression})
        try:
            with urlopen(url, timeout=2) as response:
                body = json.load(response)
        except OSError:
            return []
        return [float(sample["value"][1]) for sample in body["data"]["result"]]

    def stop(self):
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def start_prometheus(tmp_path):
    servers = []

    def start(targets):
        servers.append(Prometheus(tmp_path, targets))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()
