"""Settings, two ways.

Crash-only (stages 01 to 06): a setting the server cannot use crashes it at
start-up, and Kubernetes' restarts (CrashLoopBackOff) say so: a traceback on
stderr in 01, ONE JSON ERROR record carrying it from 02 on, nothing else. The
limit of that lesson: a value that can be used but is wrong (port 99999, a
negative wait) is not refused, and the server runs on it.

Checked (stage 07): every setting is checked at start-up; a bad value ends the
process at once with ONE record naming the variable, the value and what is
allowed, exit code 2: never a traceback, never a server quietly listening
somewhere else.
"""

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from support import STAGES, STAGES_DIR, Client, free_port, stages_from, wait_for

CHECKED = stages_from("07")
CRASH_ONLY = [s for s in STAGES if s not in CHECKED]

# A bad value is refused before the server binds: this is plenty. A stage that
# does not refuse it keeps running, and the test fails at this bound.
REFUSAL_TIMEOUT_S = 10

# Values a crash-only stage cannot use: it must crash on them at start-up.
UNUSABLE_SERVER_SETTINGS = {
    "ECHO_BIND": ["ipc-nonsense", "tcp://192.0.2.1:5555", "tcp://host.invalid:5555"],
    "LOG_LEVEL": ["bogus"],
    "LOG_SYSLOG": ["127.0.0.1:abc", "127.0.0.1", "nosuchhost.invalid:514"],
    "DRAIN_QUIET_MS": ["abc", "1.5"],
    "DRAIN_TIMEOUT_S": ["abc"],
    "METRICS_PORT": ["abc", "99999"],
}
# Values a crash-only stage can use, wrongly, and runs with.
WRONG_BUT_USABLE = {"DRAIN_QUIET_MS": "-1", "DRAIN_TIMEOUT_S": "1e10"}

# Each setting and values the checked stage must refuse.
BAD_ENDPOINTS = ["tcp://*:99999", "tcp://*:0", "tcp://*:abc", "tcp://*:+80", "ipc:///x"]
BAD_SERVER_SETTINGS = {
    # ...and two that only binding can tell: an address that is not this
    # machine's (TEST-NET-1, never routed), and a name that does not resolve.
    "ECHO_BIND": [*BAD_ENDPOINTS, "tcp://192.0.2.1:5555", "tcp://host.invalid:5555"],
    "ECHO_STARTUP_DELAY": ["abc", "-1", "nan", "inf", "1e10", "+1", " 1", "1_0", "3601"],
    "ECHO_FAULTS": ["yes", "2"],
    "LOG_LEVEL": ["bogus"],
    "LOG_SYSLOG": ["127.0.0.1:abc", "127.0.0.1", "127.0.0.1:70000",
                   "nosuchhost.invalid:514"],  # .invalid never resolves (RFC 6761)
    "DRAIN_QUIET_MS": ["1.5", "-1", "0", "abc", "+5", "3600001"],
    "DRAIN_TIMEOUT_S": ["abc", "-1", "nan", "1e10"],
    "METRICS_PORT": ["abc", "0", "99999", "+80"],
}
BAD_HEALTHCHECK_SETTINGS = {
    "HEALTHCHECK_TIMEOUT_MS": ["abc", "0", "-1", "1.5"],
    "ECHO_BIND": BAD_ENDPOINTS,
}

# Values every stage that has the setting must accept, at the edges of what
# is allowed where that is harmless (ECHO_BIND and METRICS_PORT: EchoServer
# sets them to free ports on loopback).
GOOD_SERVER_SETTINGS = {
    "ECHO_STARTUP_DELAY": "0.05",
    "ECHO_FAULTS": "1",
    "LOG_LEVEL": "debug",  # any case
    "DRAIN_QUIET_MS": "1",
    "DRAIN_TIMEOUT_S": "0",
}

ALL_SETTINGS = {*BAD_SERVER_SETTINGS, *BAD_HEALTHCHECK_SETTINGS, "ECHO_STARTUP_DELAY", "ECHO_FAULTS"}


def has_setting(stage, script, name):
    """A stage has a setting when its script names it as a string literal, so
    the cases follow the stages as they grow (a docstring mention is not enough)."""
    return f'"{name}"' in (STAGES_DIR / stage / script).read_text()


def bad_value_cases(script, bad_settings, stages):
    for stage in stages:
        if not (STAGES_DIR / stage / script).is_file():
            continue
        for name, values in bad_settings.items():
            if has_setting(stage, script, name):
                for value in values:
                    yield pytest.param(stage, name, value, id=f"{stage}-{name}={value}")


def run_with(stage, script, settings, command=None):
    """Run `script` in the stage's folder with only `settings` (and nothing the
    test runner's own environment may hold) and wait for it to end."""
    env = {k: v for k, v in os.environ.items() if k not in ALL_SETTINGS}
    env.update(settings)
    try:
        return subprocess.run(command or [sys.executable, script], cwd=STAGES_DIR / stage, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=REFUSAL_TIMEOUT_S)
    except subprocess.TimeoutExpired as running:
        output = [(text or b"").decode(errors="replace") for text in (running.stdout, running.stderr)]
        pytest.fail(f"{stage}/{script} with {settings} still ran after {REFUSAL_TIMEOUT_S} s\n"
                    f"stdout: {output[0]!r}\nstderr: {output[1]!r}")


def harmless_server_settings(stage):
    """Good values for what a server needs to start, so a stage that does not
    refuse the bad value binds a free loopback port, not *:5555 or :8000."""
    settings = {"ECHO_BIND": f"tcp://127.0.0.1:{free_port()}"}
    if has_setting(stage, "echo_server.py", "METRICS_PORT"):
        settings["METRICS_PORT"] = str(free_port())
    return settings


def assert_one_line_refusal(line, name, value):
    expected = re.escape(f"bad setting {name}={value!r}: expected ") + r"\S.*"
    assert re.fullmatch(expected, line), f"not a refusal naming {name} and {value!r}: {line!r}"


def outcome(result):
    return f"exit code {result.returncode}\nstdout: {result.stdout!r}\nstderr: {result.stderr!r}"


@pytest.mark.parametrize("stage, name, value",
                         bad_value_cases("echo_server.py", UNUSABLE_SERVER_SETTINGS, CRASH_ONLY))
def test_crash_only_server_crashes_at_start_up_on_a_setting_it_cannot_use(stage, name, value):
    result = run_with(stage, "echo_server.py", {**harmless_server_settings(stage), name: value})
    assert result.returncode == 1, outcome(result)
    if stage in stages_from("02"):  # one record holding the traceback, nothing else
        assert result.stderr == "", outcome(result)
        (record,) = [json.loads(line) for line in result.stdout.splitlines()]
        assert record["level"] == "ERROR" and record["exception"].startswith("Traceback"), outcome(result)
    else:
        assert result.stdout == "" and result.stderr.startswith("Traceback"), outcome(result)


@pytest.mark.parametrize("name, value", WRONG_BUT_USABLE.items())
def test_crash_only_server_runs_with_a_wrong_value_it_can_use(name, value, start_server):
    """The lesson's limit, on the last crash-only stage: it starts and runs."""
    server = start_server(CRASH_ONLY[-1], wait_ready=False, **{name: value})
    wait_for(lambda: "listening" in server.stdout(), timeout=10, message="the server to start")
    assert server.running()


def test_crash_only_server_quietly_listens_elsewhere_for_a_port_over_65535(start_server):
    """libzmq takes the port modulo 65536 and logs the one it was given."""
    port = free_port()
    server = start_server(CRASH_ONLY[-1], wait_ready=False, ECHO_BIND=f"tcp://127.0.0.1:{65536 + port}")
    wait_for(lambda: f"listening on tcp://127.0.0.1:{65536 + port}" in server.stdout(), timeout=10,
             message="the server to say it listens")
    with Client(f"tcp://127.0.0.1:{port}") as client:
        assert client.echo([b"where are you?"]) == [b"where are you?"]


@pytest.mark.parametrize("stage, name, value", bad_value_cases("echo_server.py", BAD_SERVER_SETTINGS, CHECKED))
def test_server_refuses_a_bad_value_in_one_line(stage, name, value):
    result = run_with(stage, "echo_server.py", {**harmless_server_settings(stage), name: value})
    assert result.returncode == 2, outcome(result)
    assert "Traceback" not in result.stdout + result.stderr, outcome(result)
    assert result.stderr == "", outcome(result)
    lines = result.stdout.splitlines()
    assert len(lines) == 1, outcome(result)
    record = json.loads(lines[0])
    assert {"time", "level", "logger", "message"} <= set(record)
    assert record["level"] == "ERROR"
    assert_one_line_refusal(record["message"], name, value)


@pytest.mark.parametrize("name, value", [(name, value) for name in ("ECHO_STARTUP_DELAY", "ECHO_FAULTS")
                                         for value in BAD_SERVER_SETTINGS[name]])
def test_the_workshops_own_switches_refuse_a_bad_value_in_one_line(name, value):
    """workshop_faults.py is the same in every stage (test_stage_diffs.py)."""
    result = run_with(STAGES[0], "echo_server.py", {**harmless_server_settings(STAGES[0]), name: value})
    assert result.returncode == 2 and result.stdout == "", outcome(result)
    assert result.stderr.count("\n") == 1, outcome(result)
    assert_one_line_refusal(result.stderr.rstrip("\n").removesuffix(" (the workshop's switch)"), name, value)


@pytest.mark.parametrize("stage, name, value", bad_value_cases("healthcheck.py", BAD_HEALTHCHECK_SETTINGS, CHECKED))
def test_healthcheck_refuses_a_bad_value_in_one_line(stage, name, value):
    """Exit code 2, not the probe's 1 for 'unhealthy': a misconfigured probe is
    not a sick replica, and its one line says which setting is wrong."""
    settings = {"ECHO_BIND": f"tcp://127.0.0.1:{free_port()}", "HEALTHCHECK_TIMEOUT_MS": "200"}
    result = run_with(stage, "healthcheck.py", {**settings, name: value})
    assert result.returncode == 2, outcome(result)
    assert result.stdout == "", outcome(result)
    assert "Traceback" not in result.stderr, outcome(result)
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, outcome(result)
    assert_one_line_refusal(result.stderr.rstrip("\n"), name, value)


@pytest.mark.parametrize("stage", STAGES)
def test_server_accepts_good_values_of_every_setting_it_has(stage, start_server):
    settings = {name: value for name, value in GOOD_SERVER_SETTINGS.items()
                if has_setting(stage, "echo_server.py", name)}
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as syslog_receiver:
        if has_setting(stage, "echo_server.py", "LOG_SYSLOG"):
            syslog_receiver.bind(("127.0.0.1", 0))
            # A name, not an address: it is resolved once at start-up.
            settings["LOG_SYSLOG"] = f"localhost:{syslog_receiver.getsockname()[1]}"
        server = start_server(stage, **settings)  # fails with the output if it exits instead
        with Client(server.endpoint) as client:
            assert client.echo([b"configured"]) == [b"configured"]
        if "LOG_SYSLOG" in settings:
            syslog_receiver.settimeout(5)
            assert b"listening" in syslog_receiver.recv(65536)  # the first record arrived
    assert server.running()


@pytest.mark.parametrize("stage", CHECKED)
def test_closed_stdout_is_one_line_on_stderr(stage):
    """Started with fd 1 closed, a stage that logs to stdout cannot log at all.
    It says so once on stderr and exits 2, instead of a traceback per record
    (or writing records into whatever file next gets descriptor 1)."""
    close_stdout_then_run = ["sh", "-c", 'exec "$0" echo_server.py >&-', sys.executable]
    result = run_with(stage, "echo_server.py", harmless_server_settings(stage), close_stdout_then_run)
    assert result.returncode == 2, outcome(result)
    assert "Traceback" not in result.stderr, outcome(result)
    assert result.stderr.endswith("\n") and result.stderr.count("\n") == 1, outcome(result)
    assert "stdout" in result.stderr, outcome(result)
