"""Every stage as a real container (podman): it builds from its own Dockerfile,
runs read-only without capabilities as a non-root user, and behaves as the
chapters say — including how it dies on `podman stop`."""

import json
import signal

import pytest

from containers import (BASE_BUILD_S, IMAGE_BUILD_S, Container, build_base_image, build_image, build_stage_image,
                        podman, require_podman)
from support import ROOT, STAGES, Client, free_port, stages_from, wait_for
from workshop.backends.cluster_job import read_outcome

STOP_TIMEOUT_S = 3
# The first test builds every image in its fixture: the limit covers that.
pytestmark = [pytest.mark.containers, pytest.mark.timeout(BASE_BUILD_S + 6 * IMAGE_BUILD_S)]


@pytest.fixture(scope="module")
def images():
    """Build the base once (cached across runs), all five stage images and the
    load generator's; return each build's seconds."""
    require_podman()
    base = build_base_image()
    seconds = {stage: build_stage_image(stage, base) for stage in STAGES}
    seconds["loadgen"] = build_image("cloudnative-echo:loadgen", ROOT, base, ROOT / "loadgen-image" / "Dockerfile")
    print("\nbuild seconds:", {name: round(s, 1) for name, s in seconds.items()})
    return seconds


@pytest.fixture
def run_container(images):
    started = []

    def run(stage, **env):
        port = free_port()
        container = Container(stage, ECHO_BIND=f"tcp://127.0.0.1:{port}",
                              METRICS_PORT=free_port(), **env)
        container.endpoint = f"tcp://127.0.0.1:{port}"
        started.append(container)
        with Client(container.endpoint) as client:
            wait_for(lambda: client.echo([b"ready?"], timeout_ms=200) == [b"ready?"],
                     timeout=30, interval=0, message=f"{stage} container to answer")
        return container

    yield run
    for container in started:
        container.remove()


@pytest.mark.parametrize("stage", STAGES)
def test_image_runs_as_numeric_non_root_user_with_exec_form_command(stage, images):
    config = json.loads(podman("image", "inspect", f"cloudnative-echo:{stage}").stdout)[0]["Config"]
    assert config["User"] == "10001:10001"
    assert config["Cmd"] == ["python", "echo_server.py"]
    assert "PYTHONUNBUFFERED=1" in config["Env"]


@pytest.mark.parametrize("stage", STAGES)
def test_container_echoes_read_only_without_capabilities(stage, run_container):
    container = run_container(stage)
    with Client(container.endpoint) as client:
        assert client.echo([b"a", b"b"]) == [b"a", b"b"]
    assert container.exec("id", "-u").stdout.strip() == "10001"
    assert container.exec("touch", "/app/x").returncode != 0  # the root filesystem is read-only


@pytest.mark.parametrize("stage", STAGES)
def test_image_has_no_build_tools(stage, run_container):
    container = run_container(stage)
    for tool in ("gcc", "cc", "make"):
        assert container.exec("sh", "-c", f"command -v {tool}").returncode != 0, tool


@pytest.mark.parametrize("stage", stages_from("03"))
def test_healthcheck_in_container_passes_then_fails_when_hung(stage, run_container):
    container = run_container(stage, ECHO_FAULTS=1)
    assert container.exec("python", "healthcheck.py").returncode == 0
    with Client(container.endpoint) as client:
        client.socket.send_multipart([b"__fault__", b"hang"])
        wait_for(lambda: client.echo([b"stuck?"], timeout_ms=100) is None, timeout=5, message="the hang")
    result = container.exec("python", "healthcheck.py")
    assert result.returncode == 1 and "no echo" in result.stderr


@pytest.mark.parametrize("stage", stages_from("01"))
def test_podman_stop(stage, run_container, record_property):
    """01-03 as PID 1 ignore SIGTERM: killed after the timeout (137).
    04-05 drain and exit 0 well before it."""
    container = run_container(stage)
    code, seconds = container.stop(STOP_TIMEOUT_S)
    record_property("stop_seconds", round(seconds, 2))
    print(f"\n{stage}: podman stop -t {STOP_TIMEOUT_S} -> exit {code} after {seconds:.2f} s")
    if stage >= "04":
        assert code == 0 and seconds < STOP_TIMEOUT_S - 1
        assert "drained" in container.logs()
    else:
        assert code == 128 + signal.SIGKILL and seconds >= STOP_TIMEOUT_S


def test_stage_02_crash_is_one_json_record_in_podman_logs(run_container):
    container = run_container("02-logging", ECHO_FAULTS=1)
    with Client(container.endpoint) as client:
        client.socket.send_multipart([b"__fault__", b"crash"])
        wait_for(lambda: not container.state()["Running"], timeout=10, message="the crash")
    records = [json.loads(line) for line in container.logs().splitlines()]
    errors = [r for r in records if r["level"] == "ERROR"]
    assert len(errors) == 1
    assert "RuntimeError: fault injected: crash" in errors[0]["exception"]
    assert container.state()["ExitCode"] == 1


def test_load_generator_image_loads_a_stage_container_and_sends_its_fault(run_container):
    """The in-cluster load generator's image, run as its Job runs it (with a
    fixed endpoint: there is no API server here to follow a Service on)."""
    target = run_container("04-shutdown", ECHO_FAULTS=1)
    result = podman("run", "--rm", "--network", "host", "--read-only", "--cap-drop", "ALL",
                    "cloudnative-echo:loadgen", "load", "--endpoint", target.endpoint, "--rate", "200",
                    "--seconds", "2", "--fault", "slow:10", "--fault-at", "0.5")
    outcome = read_outcome(result.stdout.splitlines())
    assert json.loads(result.stdout.splitlines()[0])["started"] is True
    assert outcome.fault.address == target.endpoint
    assert outcome.aware.sent >= 300 and outcome.aware.answered == outcome.aware.sent
