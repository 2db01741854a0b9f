"""What the resilient client costs when nothing goes wrong: the load
generator (workshop/load_generator.py), plain and resilient, against the
same three replicas of the newest stage, interleaved round-robin.

    python -m bench.client_cost [--rounds 5] [--smoke] [--out bench/results]

Throughput: requests answered per CPU second of the client (its threads,
libzmq's I/O thread included) at a busy 5,000 requests/s: what one client
process can sustain, without overloading the replicas (an overloaded
replica is what the resilient client is for, not a steady state). p99: at a
steady 1,000 requests/s, every request's latency. Goals (issue 18): the
resilient client ≥ 0.95× the plain one's throughput, p99 within 10 %.
"""

import json
import statistics
import tempfile
import time
from pathlib import Path

from bench.run import parse_args
from workshop.feed import Endpoint, EndpointFeed
from workshop.load_generator import LoadGenerator
from workshop.process import ServerProcess, free_port
from workshop.resilience import Resilience
from workshop.stages import all_stages

BENCH = Path(__file__).resolve().parent
FULL = {"rounds": 5, "throughput_s": 3.0, "latency_s": 3.0}
SMOKE = {"rounds": 1, "throughput_s": 0.3, "latency_s": 0.3}
BUSY = 5_000        # requests/s for the throughput run: three replicas answer it without queueing
STEADY = 1_000      # requests/s for the latency run
MODES = {"plain": None, "resilient": Resilience()}


def replicas(workdir, count=3):
    stage = all_stages()[-1]
    servers = []
    for i in range(count):
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        server = ServerProcess.of_stage(stage, {"ECHO_BIND": endpoint, "METRICS_PORT": str(free_port())},
                                        Path(workdir) / f"replica-{i}.log")
        server.start()
        server.wait_serving(endpoint)
        servers.append((endpoint, server))
    return stage, servers


def p99(result):
    latencies = sorted(s[1] for s in result.samples if s[1] is not None)
    return latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e6


def measure(feed, resilience, settings):
    cpu_s = time.process_time()
    busy = LoadGenerator(feed, rate=BUSY, resilience=resilience).run(settings["throughput_s"])
    cpu_s = time.process_time() - cpu_s
    steady = LoadGenerator(feed, rate=STEADY, resilience=resilience).run(settings["latency_s"])
    return {"throughput": busy.answered / cpu_s, "p99_us": p99(steady),
            "lost": busy.lost + steady.lost, "retries": busy.retries + steady.retries}


def goals(summary):
    throughput = summary["resilient"]["throughput"] / summary["plain"]["throughput"]
    latency = summary["resilient"]["p99_us"] / summary["plain"]["p99_us"]
    return [("resilient ≥ 0.95× plain throughput", throughput >= 0.95, f"{throughput:.2f}×"),
            ("resilient p99 within 10 % of plain", latency <= 1.10, f"{latency:.2f}×")]


def main(argv=None):
    args, settings = parse_args(argv, "python -m bench.client_cost", __doc__, FULL, SMOKE)
    samples = {mode: [] for mode in MODES}
    with tempfile.TemporaryDirectory(prefix="echo-client-bench-") as workdir:
        stage, servers = replicas(workdir)
        try:
            feed = EndpointFeed()
            feed.publish(Endpoint(f"replica-{i}", endpoint) for i, (endpoint, _) in enumerate(servers))
            for round_number in range(settings["rounds"]):
                for mode, resilience in MODES.items():
                    samples[mode].append(measure(feed, resilience, settings))
        finally:
            for _, server in servers:
                server.kill()
    summary = {mode: {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}
               for mode, rounds in samples.items()}
    report = [f"# What the resilient client costs when nothing fails ({settings['rounds']} rounds, "
              f"3 replicas of {stage})", "",
              "| client | answered per CPU s | p99 µs at 1,000/s | lost | retries |", "|---|---|---|---|---|"]
    report += [f"| {mode} | {m['throughput']:,.0f} | {m['p99_us']:.0f} | {m['lost']:.0f} | {m['retries']:.0f} |"
               for mode, m in summary.items()]
    report += ["", "Goals:", ""] + [f"- {'met' if ok else 'MISSED'}: {text} — {value}"
                                     for text, ok, value in goals(summary)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "client_cost.json").write_text(json.dumps({"settings": settings, "samples": samples,
                                                       "summary": summary}, indent=1))
    (out / "client_cost.md").write_text("\n".join(report) + "\n")
    print("\n".join(report))


if __name__ == "__main__":
    main()
