"""`make demo`'s numbers tell the workshop's story. One full battery (every
scenario on every stage, local backend) runs once; each test reads one lesson."""

import json
import subprocess
import sys

import pytest

from support import ROOT, STAGES
from workshop.manifests import load_stage
from workshop.scenarios import SCENARIOS, ScenarioResult

DEMO_TIMEOUT_S = 600
# The first test runs the whole demo in its fixture: the limit covers it.
pytestmark = pytest.mark.timeout(DEMO_TIMEOUT_S + 60)

EARLY_STAGES = ["01-plain", "02-logging", "03-probes"]
GRACEFUL_STAGES = ["04-shutdown", "05-metrics"]
REPLICAS = 3
DEFAULT_GRACE_S = 30   # terminationGracePeriodSeconds when a pod sets none (01-03)
GRACE_S_04 = 10        # what 04-05 set: preStop 3 s + drain 5 s + 2 s
PRESTOP_S = 3
DRAIN_TIMEOUT_S = 5    # 04-05's DRAIN_TIMEOUT_S


@pytest.fixture(scope="module")
def battery(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    demo = subprocess.run([sys.executable, "-m", "workshop", "demo", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=DEMO_TIMEOUT_S)
    assert demo.returncode == 0, demo.stderr
    results = [ScenarioResult(**r) for r in json.loads((out / "results.json").read_text())]
    return {"out": out, "stdout": demo.stdout,
            "results": {(r.stage, r.scenario): r for r in results}}


def result(battery, stage, scenario):
    return battery["results"][(stage, scenario)]


def test_demo_writes_the_scoreboard_a_report_and_a_plot(battery):
    assert "scenario" in battery["stdout"] and "naive client via Service" in battery["stdout"]
    report = (battery["out"] / "report.md").read_text()
    assert "| 04-shutdown |" in report and "scoreboard.png" in report
    assert (battery["out"] / "scoreboard.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(battery["results"]) == len(STAGES) * len(SCENARIOS)


# Each lesson below is derived from what a real cluster does, not from the
# local numbers: Python as PID 1 without a SIGTERM handler ignores SIGTERM
# until the grace period (30 s by default, 01-03 set none) ends in SIGKILL;
# with an init process SIGTERM kills at once; 04-05 drain within their own
# grace period (10 s) and exit 0.

@pytest.mark.parametrize("stage", EARLY_STAGES)
def test_rollout_of_python_as_pid_1_waits_a_grace_period_per_pod_then_sigkills(battery, stage):
    r = result(battery, stage, "rolling-restart")
    assert r.sigkills == REPLICAS and r.rollout_s >= DEFAULT_GRACE_S
    # Still serving while the endpoint-aware client learned of its removal:
    # nothing like the loss under an init process (0 in the measured runs).
    assert r.sent >= 5000 and r.lost <= r.sent // 100


@pytest.mark.parametrize("stage", GRACEFUL_STAGES)
def test_rollout_with_graceful_shutdown_loses_nothing_kills_nothing_and_is_quick(battery, stage):
    r = result(battery, stage, "rolling-restart")
    assert r.sent >= 5000 and r.lost == 0 and r.answered == r.sent
    assert r.sigkills == 0 and max(r.pod_exit_s) <= GRACE_S_04 and r.rollout_s < DEFAULT_GRACE_S
    assert min(r.pod_exit_s) >= PRESTOP_S  # each kept serving through preStop first
    # the naive client's pod never goes quiet: it drains until the deadline
    assert max(r.pod_exit_s) >= PRESTOP_S + DRAIN_TIMEOUT_S


@pytest.mark.parametrize("stage", EARLY_STAGES)
def test_under_an_init_process_sigterm_kills_at_once_with_requests_in_flight(battery, stage):
    r = result(battery, stage, "rolling-restart-init")
    assert r.lost > 0 and r.sigkills == 0 and max(r.pod_exit_s) < GRACE_S_04


@pytest.mark.parametrize("stage", GRACEFUL_STAGES)
def test_under_an_init_process_graceful_shutdown_still_loses_nothing(battery, stage):
    r = result(battery, stage, "rolling-restart-init")
    assert r.sent >= 5000 and r.lost == 0 and r.sigkills == 0


@pytest.mark.parametrize("stage", STAGES)
def test_naive_client_through_the_service_loses_only_what_is_in_flight_when_its_pod_goes(battery, stage):
    """Its connection stays on its pod (conntrack) until that pod's process is
    gone: then it reconnects through the Service, and only the requests in
    flight at that moment can be lost."""
    r = result(battery, stage, "rolling-restart")
    assert r.via_service_sent >= 1000 and r.via_service_lost <= r.via_service_sent // 100


@pytest.mark.parametrize("scenario, deleted", [("pod-kill", 1), ("scale-down", 2)])
@pytest.mark.parametrize("stage", EARLY_STAGES)
def test_deleted_pods_of_python_as_pid_1_are_sigkilled_after_the_grace_period(battery, stage, scenario, deleted):
    r = result(battery, stage, scenario)
    assert r.sigkills == deleted and min(r.pod_exit_s) >= DEFAULT_GRACE_S - 1 and r.lost <= r.sent // 100


@pytest.mark.parametrize("scenario", ["pod-kill", "scale-down"])
@pytest.mark.parametrize("stage", GRACEFUL_STAGES)
def test_deleted_pods_with_graceful_shutdown_drain_and_exit(battery, stage, scenario):
    r = result(battery, stage, scenario)
    assert r.lost == 0 and r.sigkills == 0 and max(r.pod_exit_s) <= GRACE_S_04


@pytest.mark.parametrize("stage", ["01-plain", "02-logging"])
def test_hung_replica_without_liveness_loses_everything_sent_to_it(battery, stage):
    r = result(battery, stage, "hang")
    assert r.recover_s is None  # never taken out of rotation
    assert r.sent_to_hung > 1000 and r.lost_to_hung == r.sent_to_hung


@pytest.mark.parametrize("stage", ["03-probes", *GRACEFUL_STAGES])
def test_hung_replica_leaves_rotation_only_when_the_liveness_kill_is_done(battery, stage):
    """Liveness fails after `failureThreshold` checks; the kill then takes the
    grace period (a hung loop exits on no SIGTERM), and all that time the TCP
    readiness probe passes: libzmq's I/O thread still accepts."""
    r = result(battery, stage, "hang")
    spec = load_stage(stage)
    probe = spec.liveness
    earliest = probe.period_s * (probe.failure_threshold - 1) + spec.grace_s
    latest = probe.period_s * (probe.failure_threshold + 1) + probe.timeout_s + spec.grace_s + 1.5
    assert r.recover_s is not None and earliest <= r.recover_s <= latest


def test_slow_start_without_readiness_probe_routes_early_and_latency_shows_it(battery):
    r = result(battery, "02-logging", "slow-start")
    assert r.early > 100 and r.max_ms >= 1000


@pytest.mark.parametrize("stage", ["03-probes", *GRACEFUL_STAGES])
def test_slow_start_with_readiness_probe_routes_nothing_early(battery, stage):
    r = result(battery, stage, "slow-start")
    assert r.early == 0 and r.max_ms < 1000


@pytest.mark.parametrize("stage", ["01-plain", "02-logging", "03-probes", *GRACEFUL_STAGES])
def test_crashed_replica_is_restarted(battery, stage):
    r = result(battery, stage, "crash")
    assert r.restarts >= 1 and r.recover_s is not None


def test_crash_without_logging_scatters_the_traceback(battery):
    assert result(battery, "01-plain", "crash").crash_log_records > 5


@pytest.mark.parametrize("stage", ["02-logging", "03-probes", *GRACEFUL_STAGES])
def test_crash_with_logging_leaves_one_record(battery, stage):
    assert result(battery, stage, "crash").crash_log_records == 1
