"""Can one client take a replica down? Each attack of the issue, run against
a stage held to its Deployment's memory limit (bench/memory_limit.py), while a
good client keeps asking for echoes (bench/attackers.py).

    python -m bench.attacks [--stages 01 04 05] [--quick] [--out bench/results]
    (or python bench/attacks.py; `make bench` runs it after bench.run)

Prints one Markdown table: per attack and stage, the peak memory, whether the
replica held (not OOM-killed, still running, peak under the limit), the good
client's answers, and what else the attack shows. tests/test_attacks.py runs
the same attacks, smaller, and asserts what the table shows.
"""

import argparse
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

if __package__ in (None, ""):  # run as `python bench/attacks.py`: import as the package
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import attackers
from bench.attackers import Connections, Flood, GoodClient, until
from bench.memory_limit import ContainedServer, raise_open_file_limit, stage_constant, stage_path

MB = 1e6
SMALL_MESSAGE_BYTES = 64
# libzmq's own costs, for the bound in stage 01's README (measured: ~27 kB per
# idle peer, ~64 B per empty frame, ~240 B per 140-byte frame).
ZMQ_BYTES_PER_CONNECTION = 32 * 1024  # pipes, encoder and decoder buffers
ZMQ_BYTES_PER_FRAME = 128  # a zmq_msg_t, and the heap block of a frame over 33 bytes
IDENTITY_BYTES = 5  # the identity ROUTER gives a peer and puts first in each message
# http.server alone reads up to 100 header lines of 64 KiB per /metrics
# request; a stage with METRICS_REQUEST_BYTES reads no more than that.
HTTP_HEADER_LINES, HTTP_LINE_BYTES = 98, 64 * 1024  # the most http.server takes, with Host
HTTP_PARSE_FACTOR = 6  # what parsing a request costs per byte of it (measured: ~37 MB for 6.4 MB of headers)
HTTP_THREAD_BYTES = 64 * 1024  # a request's thread and buffers, whatever it sends (measured: ~67 kB in all at 8 KiB)


def per_peer_bound(stage):
    """The most one peer can make the server hold (stage 01's README): its
    connection, and both queues full of the biggest messages the loop echoes."""
    queued = stage_constant(stage, "QUEUED_REQUESTS") + stage_constant(stage, "QUEUED_REPLIES")
    frames = stage_constant(stage, "MAX_FRAMES") + 1  # and the identity
    message = stage_constant(stage, "MAX_MESSAGE_BYTES") + IDENTITY_BYTES + frames * ZMQ_BYTES_PER_FRAME
    return ZMQ_BYTES_PER_CONNECTION + queued * message


def worst_case_bytes(stage, baseline, probe_bytes):
    """What the container can be made to hold at once (stage 01's README): the
    interpreter, every connection its descriptors allow at its worst, the
    kernel's socket buffers, a liveness probe's process (exec probes run in
    the container), and /metrics' requests."""
    connections = stage_constant(stage, "MAX_CONNECTIONS") + stage_constant(stage, "OWN_FILES")
    kernel = connections * 2 * 2 * stage_constant(stage, "SOCKET_BUFFER_BYTES")  # Linux doubles SO_*BUF
    metrics = stage_constant(stage, "METRICS_CONNECTIONS", default=0) * metrics_request_bound(stage)
    return baseline + connections * per_peer_bound(stage) + kernel + probe_bytes + metrics


def metrics_request_bound(stage):
    """The most one /metrics request can make the server hold while it is read."""
    request = stage_constant(stage, "METRICS_REQUEST_BYTES", default=(HTTP_HEADER_LINES + 2) * HTTP_LINE_BYTES)
    return request * HTTP_PARSE_FACTOR + HTTP_THREAD_BYTES


def probe_bytes(stage):
    """Peak RSS of one run of the stage's healthcheck.py (0 without one)."""
    script = stage_path(stage) / "healthcheck.py"
    if not script.exists():
        return 0
    measure = ("import resource, subprocess, sys; subprocess.run([sys.executable, sys.argv[1]], "
               "capture_output=True, env={'ECHO_BIND': 'tcp://127.0.0.1:1', 'HEALTHCHECK_TIMEOUT_MS': '100'}); "
               "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")
    output = subprocess.run([sys.executable, "-c", measure, str(script)], capture_output=True, text=True,
                            timeout=30, check=True).stdout
    return int(output) * 1024


@dataclass
class Outcome:
    attack: str
    stage: str
    limit: int
    peak: int              # as the limit counts it (see ContainedServer.peak_bytes)
    vm_hwm: int            # peak RSS, file pages included
    oom_killed: bool
    running: bool          # still running once the attack is over
    good_sent: int
    good_answered: int
    contained: bool        # ran in a memory cgroup (else: VmHWM against the limit)
    facts: dict = field(default_factory=dict)

    @property
    def under_limit(self):
        return self.peak < self.limit

    @property
    def held(self):
        return not self.oom_killed and self.running and self.under_limit


def run(attack, stage, env=None, open_files=None, cpu_cores=None, **sizes):
    """Start the stage contained, start a good client, run `attack(server,
    good, **sizes)`, and collect what happened."""
    server = ContainedServer(stage, env=env, open_files=open_files, cpu_cores=cpu_cores).start()
    try:
        good = GoodClient(server.endpoint, still_running=server.running).start()
        try:
            facts = attack(server, good, **sizes)
        finally:
            good.stop()
        # The attack is over, the good client's last echo answered or not:
        # this is the moment "it survived" is judged.
        return Outcome(attack.__name__, server.stage, server.limit, server.peak_bytes(), server.vm_hwm_bytes(),
                       server.oom_killed(),
                       server.running(), good.sent, good.answered, server.cgroup is not None, facts)
    finally:
        server.stop()


def stop_when_dead(server, seconds):
    """Let an attack go on for `seconds`, or until it killed the server."""
    until(lambda: not server.running(), seconds, interval_s=0.05)


# --- the attacks: each takes the server and the good client, returns facts ---

def big_frames(server, good, frames_per_message=range(8, 65), clients=1, frame_bytes=1_000_000, seconds=3):
    """Messages of 1 MB frames, never reading the replies: the server used to
    queue every echo it could not send."""
    with Flood(server.endpoint, clients, frames_per_message, frame_bytes) as flood:
        stop_when_dead(server, seconds)
        return {"messages sent": flood.sent}


def small_messages(server, good, messages=200_000, seconds=30):
    """Many small messages, never reading the replies."""
    with Flood(server.endpoint, 1, (1,), SMALL_MESSAGE_BYTES, messages=messages) as flood:
        until(lambda: flood.done() or not server.running(), seconds, interval_s=0.05)
        return {"messages sent": flood.sent}


def full_queues(server, good, peers=100, seconds=20):
    """Peers that never read, each sending the costliest message the loop
    still echoes (MAX_FRAMES frames of over 33 bytes, MAX_MESSAGE_BYTES in
    all): each fills both its queues. What one such peer costs is the figure
    the memory bound of stage 01's README rests on. Goes on until every peer
    has sent enough to fill its queues twice over (or `seconds`)."""
    frames = stage_constant(server.stage, "MAX_FRAMES", default=8)
    frame_bytes = stage_constant(server.stage, "MAX_MESSAGE_BYTES", default=1024) // frames
    enough = peers * 2 * (stage_constant(server.stage, "QUEUED_REQUESTS", default=1000)
                          + stage_constant(server.stage, "QUEUED_REPLIES", default=1000))
    baseline = server.rss_bytes()
    with Flood(server.endpoint, peers, (frames,), frame_bytes) as flood:
        until(lambda: flood.sent >= enough or not server.running(), seconds, interval_s=0.05)
        # Our own libzmq queues what the server has not read yet: the server
        # is full once its memory stops growing.
        settled = until(growth_stopped(server), seconds, interval_s=1)
        sent = flood.sent
    peak = server.status().get("VmHWM", 0) * 1024
    return {"messages sent": sent, "filled": sent >= enough and bool(settled), "baseline": baseline,
            "bytes per peer": round((peak - baseline) / peers) if peak else None}


def growth_stopped(server):
    """A condition for until(): true once the server's RSS grew by less than
    1 % since the condition was last asked (or the server is gone)."""
    last = [None]  # the first reading only starts the comparison

    def check():
        now = server.rss_bytes()
        stopped = not server.running() or (last[0] is not None and now < last[0] * 1.01)
        last[0] = now
        return stopped
    return check


def frame_bomb(server, good, frames=1_000_000, seconds=60):
    """One message of empty frames (2 bytes each on the wire). libzmq
    assembles the whole message before the loop sees it; the loop must not
    then turn it into a list. A small message after the bomb on the same
    connection tells when the bomb has been dealt with."""
    rss_before = server.rss_bytes()
    started = time.monotonic()
    marker = b"after the bomb"
    with attackers.frame_bomb(server.endpoint, frames) as sock:
        sock.sendall(attackers.zmtp_message([marker]))
        answered = read_until(sock, attackers.zmtp_message([marker]), seconds)
    stall_s = time.monotonic() - started
    peak = server.status().get("VmHWM", 0) * 1024
    return {"bytes per frame": round((peak - rss_before) / frames, 1) if peak else None,
            "marker echoed": answered, "stall s": round(stall_s, 1)}


def read_until(sock, expected, seconds):
    """Read from a raw socket until `expected` arrived (True), or it closed or
    `seconds` passed (False). Keeps only a tail: an echoed bomb is big."""
    sock.settimeout(seconds)
    deadline, tail = time.monotonic() + seconds, b""
    while time.monotonic() < deadline:
        try:
            data = sock.recv(1 << 16)
        except OSError:
            return False
        if not data:
            return False
        tail = (tail + data)[-(len(expected) + (1 << 16)):]
        if expected in tail:
            return True
    return False


def idle_peers(server, good, peers=10_000, seconds=20):
    """Peers that complete the ZeroMQ handshake, then say nothing: each costs
    the server its pipes and buffers."""
    with Connections(*attackers.host_port(server.endpoint), peers, attackers.ZMTP_OPENING) as held:
        held.settle(seconds)
        return {"connected": held.connected, "handshaked": held.handshaked(), **ceiling_facts(server)}


def raw_connections(server, good, connections=10_000, seconds=20):
    """TCP connections that never speak."""
    with Connections(*attackers.host_port(server.endpoint), connections) as held:
        held.settle(seconds)
        return {"connected": held.connected, **ceiling_facts(server)}


def churn(server, good, connections=10_000):
    """Connect and disconnect, over and over."""
    return {"connects": attackers.churn(server.endpoint, connections)}


def connection_ceiling(server, good, connections=2_000, seconds=20):
    """More handshaking peers than the server has file descriptors (start the
    server with a low open_files): does a fresh TCP connect still complete,
    and does the liveness probe still call the replica alive?"""
    with Connections(*attackers.host_port(server.endpoint), connections, attackers.ZMTP_OPENING) as held:
        held.settle(seconds)
        return {"connected": held.connected, "handshaked": held.handshaked(), **ceiling_facts(server)}


def ceiling_latency(server, good, connections=2_000, seconds=10):
    """The good client's echoes while the replica sits at its connection
    ceiling with connections waiting: libzmq retries accept() as fast as it
    can (no back-off on EMFILE), and under a CPU limit that spin competes
    with the loop. Start the server with open_files and cpu_cores."""
    before = good.p99_ms()
    good.waits_s.clear()
    with Connections(*attackers.host_port(server.endpoint), connections, attackers.ZMTP_OPENING) as held:
        held.settle(5)
        cpu_before = server.cpu_seconds()
        time.sleep(seconds)  # the attack's duration: the good client echoes meanwhile
        spin = (server.cpu_seconds() - cpu_before) / seconds
    return {"good p99 ms before": before, "good p99 ms at the ceiling": good.p99_ms(),
            "server CPU (cores)": round(spin, 2),
            "throttled s": round(server.cpu.throttled_s(), 1) if server.cpu else None}


def ceiling_facts(server):
    """What a kubelet would see now: a tcpSocket probe, and the exec probe
    (stages with a healthcheck.py)."""
    facts = {"fresh TCP connect": attackers.tcp_connect_succeeds(server.endpoint)}
    if (stage_path(server.stage) / "healthcheck.py").exists():
        facts["healthcheck exit"] = attackers.healthcheck(stage_path(server.stage), server.endpoint)
    return facts


def slow_metrics_clients(server, good, clients=2_000, seconds=20):
    """HTTP clients on /metrics that never finish their headers: a server
    with a thread per connection keeps a thread for each."""
    before = server.threads()
    with Connections("127.0.0.1", server.metrics_port, clients, attackers.SLOW_HTTP_OPENING) as held:
        held.settle(seconds)
        # Give a thread-per-connection server the moment it needs to start them all.
        until(lambda: server.threads() - before >= clients or not server.running(), 2)
        threads = server.threads()
    # Afterwards a scrape must work again (a bounded server may first finish
    # the time-outs of the clients just gone).
    scraped = until(lambda: not server.running() or attackers.scrape(server.metrics_port), 15, interval_s=0.2)
    return {"connected": held.connected, "threads before": before, "threads during": threads,
            "scrape after": scraped and server.running()}


def sigterm_under_flood(server, good, clients=4, flood_s=0.5):
    """SIGTERM while DEALERs flood small messages: the loop must notice it
    and finish its drain by DRAIN_TIMEOUT_S (start the server with a small
    one in its env) while the flood goes on."""
    good.stop()  # the replica is going away: from here on no answer is owed
    drain_timeout_s = float(server.env["DRAIN_TIMEOUT_S"])
    # The drain ends by closing with LINGER: queued replies get that long to flush.
    linger_s = stage_constant(server.stage, "LINGER_MS", default=0) / 1000
    with Flood(server.endpoint, clients, (1,), SMALL_MESSAGE_BYTES) as flood:
        until(lambda: flood.sent > 0, 5)
        time.sleep(flood_s)  # the attack's duration: flooding before the signal
        sent_before = flood.sent
        server.status()  # its VmHWM so far: once it has exited there is none to read
        signalled, signalled_at = time.monotonic(), time.time()
        server.send_signal(signal.SIGTERM)
        exited = until(lambda: not server.running(), drain_timeout_s + linger_s + 5, interval_s=0.01)
        exit_s = time.monotonic() - signalled
        flood_went_on = flood.sent > sent_before and not flood.done()
    noticed_at = record_time(server.output(), "received, draining")
    return {"exit s": round(exit_s, 2) if exited else None, "exit code": server.exit_code(),
            "draining logged": noticed_at is not None, "flood went on": flood_went_on,
            "noticed after ms": round((noticed_at - signalled_at) * 1000) if noticed_at else None,
            "drain timeout s": drain_timeout_s, "linger s": linger_s}


def squatters(server, good, count=400, trickle_s=None, seconds=30):
    """More raw connections than the ceiling lets in, each back as soon as it
    is cut: silent after a whole ZeroMQ handshake, or (trickle_s) greeting
    one byte at a time. How long does a client that comes now wait?"""
    ceiling = stage_constant(server.stage, "MAX_CONNECTIONS", default=None)
    with attackers.Squatters(server.endpoint, count, trickle_s=trickle_s) as held:
        if ceiling:  # every slot taken before the fresh client comes
            until(lambda: server.open_files() >= ceiling or not server.running(), 10)
        open_files = server.open_files()
        waited = attackers.fresh_client_waits_s(server.endpoint, seconds)
        return {"open files": open_files, "fresh client waited s": round(waited, 1) if waited else None,
                "cut and back": held.cuts}


def huge_metrics_requests(server, good, clients=4, header_lines=HTTP_HEADER_LINES, line_bytes=HTTP_LINE_BYTES):
    """/metrics requests with as many headers as http.server takes, all at once."""
    baseline = server.rss_bytes()
    statuses = attackers.huge_http_requests(server.metrics_port, clients, header_lines, line_bytes)
    peak = server.status().get("VmHWM", 0) * 1024
    return {"statuses": sorted(statuses), "bytes per request": round((peak - baseline) / clients),
            "scrape after": bool(attackers.scrape(server.metrics_port))}


def concurrent_frame_bombs(server, good, bombs=2, frames=1_000_000, seconds=60):
    """Several frame bombs at once, each on its own connection: libzmq holds
    every incomplete message whole, so their costs add up."""
    rss_before = server.rss_bytes()
    marker = attackers.zmtp_message([b"after the bomb"])
    sockets = [attackers.frame_bomb(server.endpoint, frames) for _ in range(bombs)]
    try:
        for sock in sockets:
            sock.sendall(marker)
        answered = [read_until(sock, marker, seconds) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
    peak = server.status().get("VmHWM", 0) * 1024
    return {"markers echoed": sum(answered), "bytes per frame": round((peak - rss_before) / (bombs * frames), 1)}


def record_time(output, words):
    """When the server logged its first JSON record whose message contains
    `words`, by its own clock (UTC, epoch seconds); None if it did not."""
    for line in output.splitlines():
        if words in line and words in (record := json.loads(line))["message"]:
            return datetime.fromisoformat(record["time"].removesuffix("Z")).replace(tzinfo=timezone.utc).timestamp()
    return None


# --- the table ---

ROWS = [  # the rows: (label, attack, stages, options)
    ("multipart messages of 8–64 frames of 1,000,000 bytes, never reading", big_frames, None, {}),
    ("single 1,000,000-byte frames, never reading", big_frames, None, {"frames_per_message": (1,)}),
    ("40 such clients, 8 frames each", big_frames, None, {"frames_per_message": (8,), "clients": 40}),
    ("200,000 small messages, never reading", small_messages, None, {}),
    ("100 peers never reading, the costliest messages echoed", full_queues, None, {"peers": 100}),
    ("one message of 1,000,000 empty frames", frame_bomb, None, {}),
    ("one message of 4,000,000 empty frames: libzmq's residual", frame_bomb, None, {"frames": 4_000_000}),
    ("10,000 idle peers that completed the ZeroMQ handshake", idle_peers, None, {}),
    ("10,000 raw TCP connections held open", raw_connections, None, {}),
    ("10,000 connect/disconnect churn", churn, None, {}),
    ("2,000 connections with nofile 1024", connection_ceiling, None, {"open_files": 1024}),
    ("at the ceiling (nofile 1024), no CPU limit: a good client's p99", ceiling_latency, None,
     {"open_files": 1024}),
    ("at the ceiling (nofile 1024), the Deployment's 500m CPU limit: a good client's p99", ceiling_latency, None,
     {"open_files": 1024, "cpu_cores": 0.5}),
    ("2,000 slow HTTP clients on /metrics", slow_metrics_clients, ("05", "06"), {}),
    ("4 /metrics requests of 98 header lines of 64 KiB at once", huge_metrics_requests, ("05", "06"), {}),
    ("400 silent ZeroMQ peers, back as soon as cut: a fresh client's wait", squatters, None, {}),
    ("400 one-byte-every-2-s greeters, back as soon as cut: a fresh client's wait", squatters, None,
     {"trickle_s": 2}),
    ("2 concurrent messages of 1,000,000 empty frames", concurrent_frame_bombs, None, {}),
    ("4 concurrent messages of 1,000,000 empty frames: the residual's concurrency", concurrent_frame_bombs, None,
     {"bombs": 4}),
    ("4 DEALERs flooding small messages, then SIGTERM", sigterm_under_flood, ("04", "06"),
     {"env": {"DRAIN_TIMEOUT_S": "1"}}),
]

QUICK = {  # --quick: the test suite's sizes
    "big_frames": {"seconds": 1.5}, "small_messages": {"messages": 50_000},
    "full_queues": {"peers": 60}, "frame_bomb": {"frames": 500_000}, "idle_peers": {"peers": 6_000},
    "raw_connections": {"connections": 6_000}, "churn": {"connections": 3_000},
}


def row_cells(label, outcome):
    facts = ", ".join(f"{k}: {v}" for k, v in outcome.facts.items())
    verdict = ("OOM-killed" if outcome.oom_killed else "held" if outcome.held
               else "over the limit" if not outcome.under_limit
               else "exited 0" if outcome.facts.get("exit code") == 0 else "not running")
    where = f"{outcome.limit / 2**20:.0f} MiB cgroup" if outcome.contained else "no cgroup: VmHWM vs limit"
    hwm = f"{outcome.vm_hwm / MB:.0f} MB" if outcome.vm_hwm else "n/a"  # killed before it could be read
    return (f"| {label} | {outcome.stage} | {outcome.peak / MB:.0f} MB / {hwm} | "
            f"{verdict} ({where}) | "
            f"{outcome.good_answered}/{outcome.good_sent} | {facts} |")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.attacks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", nargs="+", default=["05", "06"])
    parser.add_argument("--quick", action="store_true", help="the test suite's smaller attacks")
    parser.add_argument("--out", help="also write the table to OUT/attacks.md")
    args = parser.parse_args(argv)
    raise_open_file_limit()
    started = time.monotonic()
    lines = []

    def emit(line):
        print(line, flush=True)
        lines.append(line)

    emit(f"# Can one client take a replica down? ({'quick sizes: the test suite’s, not the labels’' if args.quick else 'the issue’s sizes'})")
    emit("")
    emit("| attack | stage | peak charged / VmHWM | held under the memory limit? | good client answers | also | s |")
    emit("|---|---|---|---|---|---|---|")
    for label, attack, only_stages, options in ROWS:
        options = dict(options)
        env, open_files = options.pop("env", None), options.pop("open_files", None)
        cpu_cores = options.pop("cpu_cores", None)
        if args.quick:
            options.update(QUICK.get(attack.__name__, {}))
        for stage in args.stages:
            if only_stages and not any(stage.startswith(s) for s in only_stages):
                continue
            row_started = time.monotonic()
            outcome = run(attack, stage, env=env, open_files=open_files, cpu_cores=cpu_cores, **options)
            emit(row_cells(label, outcome) + f" {time.monotonic() - row_started:.0f} |")
    emit("")
    emit("Peak charged: the cgroup's high-water mark, what the limit is enforced on. VmHWM: the "
         "process's peak RSS, which also counts the interpreter's and libraries' file pages.")
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out) / "attacks.md").write_text("\n".join(lines) + "\n")
    print(f"\n{time.monotonic() - started:.0f} s", file=sys.stderr)


if __name__ == "__main__":
    main()
