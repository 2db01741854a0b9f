"""The scoreboard: results -> a table for the terminal, a Markdown report and
a PNG plot. Built from the result records only, never from logs."""

import json
from pathlib import Path

from .losses import CAUSES

LOST_BAND_MS = 200_000  # where lost requests are drawn: far above any latency

# What each row shows, told by capability rather than by stage number, so a
# new stage needs no entry here.
LESSONS = {
    "steady": "Nothing happens. The baseline: every stage answers in well under a millisecond.",
    "rolling-restart": "Every replica replaced under load. A stage without a SIGTERM handler runs as PID 1: "
                       "SIGTERM is ignored, each old pod runs on out of the endpoints until SIGKILL at the "
                       "30 s grace period. With a handler and preStop, pods serve through preStop, drain and "
                       "exit 0 in seconds: nothing lost to a pod going away, no SIGKILL.",
    "rolling-restart, naive client via Service": "A naive client through the Service, beside the "
                       "endpoint-aware one: its connection stays on its pod until that pod's process is gone.",
    "rolling-restart-init": "The same rollout with Python not PID 1 (tini, dumb-init): SIGTERM kills a stage "
                            "without a handler at once, with the requests in flight (going-away: sent before the "
                            "client heard); with a handler it still loses nothing.",
    "pod-kill": "One replica deleted: the same lesson as the rollout, for one pod.",
    "crash": "A crash fault. Every stage is restarted; with logging the crash is ONE log record "
             "carrying its traceback instead of a dozen loose lines.",
    "hang": "A hang fault: the process lives, its loop does not. Without a liveness probe the replica keeps "
            "receiving traffic until the end; with one it leaves rotation when the liveness kill is done: "
            "two failed checks, then the grace period (TCP readiness still passes meanwhile).",
    "slow-start": "A rollout to replicas that need 2 s to start. Without a readiness probe requests are sent "
                  "to a socket nobody listens on yet and wait; with one nothing is sent before it is ready.",
    "scale-down": "Two of three replicas removed under load: again a stage without a SIGTERM handler waits "
                  "for SIGKILL, one with a handler drains.",
    "hang, resilient client": "The same hang, met by a client beside the endpoint-aware one that keeps "
                              "deadlines: an attempt unanswered in 0.1 s is retried on another replica (the "
                              "echo is idempotent), within a budget of a tenth of the requests; a replica with "
                              "three time-outs in a row is ejected, and probed after a back-off. Nothing lost, "
                              "whatever the stage's probes.",
    "crash, resilient client": "The crash, met by the resilient client: what was in flight to the dead replica "
                               "is retried.",
    "pod-kill, resilient client": "The pod deletion, met by the resilient client: an attempt to a replacement "
                                  "listed before it listens is retried, not lost.",
    "hostile-client": "One client sends megabyte frames to one replica and never reads. Without limits the "
                      "replica queues the echoes until the kernel OOM-kills it at its Deployment's memory limit, "
                      "once or twice while we watch, with the requests in flight; with limits it drops that "
                      "peer at its first frame and holds.",
}


def lost(result):
    """"lost 0", or "lost 243 going-away", or "lost 250: 243 going-away + 7 not-listening"."""
    return lost_text(result.lost, result.lost_by_cause)


def lost_text(total, causes):
    causes = causes or {}
    if not total or not causes:
        return f"lost {total}"
    if len(causes) == 1:
        return f"lost {total} {next(iter(causes))}"
    return f"lost {total}: " + " + ".join(f"{count} {cause}" for cause, count in causes.items())


def cell(result):
    """The one thing to read in a scoreboard cell for this scenario."""
    r = result
    if r.no_figure:
        return f"no figure: {r.no_figure}"
    if r.scenario == "hostile-client":
        held = f"OOM-killed {r.oom_kills}x" if r.oom_kills else "held"
        return f"{held}, {lost(r)}"
    if r.scenario == "steady":
        return f"p99 {r.p99_ms:.2f} ms" if r.p99_ms is not None else "no answer"
    if r.scenario == "crash":
        return f"{r.restarts} restart, {r.crash_log_records} log rec."
    if r.scenario == "hang":
        out = f"out after {r.recover_s:.1f} s" if r.recover_s is not None else "never out"
        return f"{lost(r)}, {out}"
    if r.scenario == "slow-start":
        return f"{r.early} early, max {r.max_ms:.0f} ms"
    if r.scenario in ("pod-kill", "scale-down"):
        gone = f"gone in {max(r.pod_exit_s):.1f} s" if r.pod_exit_s else "not gone"
        return f"{lost(r)}, {r.sigkills} SIGKILL, {gone}"
    if r.scenario.startswith("rolling-restart"):
        done = f"{r.rollout_s:.1f} s" if r.rollout_s is not None else "not done"
        return f"{lost(r)}, {r.sigkills} SIGKILL, {done}"
    return f"{lost(r)} of {r.sent}"


def via_service_cell(result):
    """The naive client's fate through the Service, in the same run."""
    return f"lost {result.via_service_lost} of {result.via_service_sent}"


def resilient_cell(result):
    """The resilient client's fate, beside the endpoint-aware one in the same run."""
    r = result
    return f"{lost_text(r.resilient_lost, r.resilient_lost_by_cause)}, {r.retries} retries (+{r.retries / max(1, r.resilient_sent):.1%} load), " \
           f"{r.ejections} ejections"


def columns(results):
    """(heading, the scenario it reads, how to read a result) for every column."""
    found = []
    for scenario in dict.fromkeys(r.scenario for r in results):
        found.append((scenario, scenario, cell))
        of_scenario = [r for r in results if r.scenario == scenario]
        if any(r.via_service_sent is not None for r in of_scenario):
            found.append((f"{scenario}, naive client via Service", scenario, via_service_cell))
        if any(r.resilient_sent is not None for r in of_scenario):
            found.append((f"{scenario}, resilient client", scenario, resilient_cell))
    return found


def table(results):
    """The scoreboard's rows: a header (the stages), then a row per scenario
    (and per naive client through a Service), each cell the one thing to read."""
    stages = sorted({r.stage for r in results})
    by_pair = {(r.stage, r.scenario): r for r in results}
    return [["scenario", *stages]] + [
        [heading, *(read(by_pair[(stage, scenario)]) if (stage, scenario) in by_pair else "-" for stage in stages)]
        for heading, scenario, read in columns(results)]


def scoreboard(results):
    """The table as plain text, for the terminal."""
    rows = table(results)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(text.ljust(width) for text, width in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def markdown(results, backend, plot_name=None):
    header, *rows = table(results)
    out = [f"# Scoreboard ({backend} backend)", "",
           "| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    out += ["| " + " | ".join(row) + " |" for row in rows]
    if plot_name:
        out += ["", f"![latency over time, lost requests marked]({plot_name})"]
    out += ["", "Lost requests are counted by cause (workshop/losses.py): " + "; ".join(
        f"**{cause}**" for cause in CAUSES) + ".", "", "## What each scenario shows", ""]
    out += [f"- **{row[0]}**: {LESSONS.get(row[0]) or LESSONS[row[0].split(',')[0]]}" for row in rows]
    out += ["", "## Every number", "",
            "| scenario | stage | sent | answered | lost | p50 ms | p99 ms | max ms | slow | recover s "
            "| rollout ready s | rollout done s | SIGKILLs | deletion to gone s | via Service lost/sent "
            "| restarts | OOM kills | lost, by cause |", "|---" * 18 + "|"]
    for r in results:
        via = f"{r.via_service_lost}/{r.via_service_sent}" if r.via_service_sent is not None else ""
        causes = ", ".join(f"{cause} {count}" for cause, count in (r.lost_by_cause or {}).items())
        out.append(f"| {r.scenario} | {r.stage} | {r.sent} | {r.answered} | {r.lost} | {r.p50_ms} | "
                   f"{r.p99_ms} | {r.max_ms} | {r.slow} | {r.recover_s} | {r.rollout_ready_s} | {r.rollout_s} "
                   f"| {r.sigkills} | {', '.join(map(str, r.pod_exit_s))} | {via} | {r.restarts} "
                   f"| {r.oom_kills if r.oom_kills is not None else ''} | {causes or (r.no_figure or '')} |")
    return "\n".join(out) + "\n"


def draw_timeline(ax, results, scenario):
    """One scenario's latency over time, a colour per stage; lost requests as
    marks in a band above the latencies, a row per stage."""
    import matplotlib.pyplot as plt
    stages = sorted({r.stage for r in results})
    colours = dict(zip(stages, plt.get_cmap("tab10").colors))
    for r in (r for r in results if r.scenario == scenario):
        answered = [(t, ms) for t, ms in r.timeline if ms is not None]
        lost = [t for t, ms in r.timeline if ms is None]
        if answered:
            ax.plot(*zip(*answered), ".", markersize=1.5, color=colours[r.stage], label=r.stage)
        if lost:
            row = LOST_BAND_MS / 1.8 ** stages.index(r.stage)
            ax.plot(lost, [row] * len(lost), "|", markersize=5, color=colours[r.stage])
    ax.axhline(LOST_BAND_MS / 1.8 ** len(stages), color="grey", linewidth=0.5)
    ax.set_yscale("log")
    ax.set_ylim(0.05, LOST_BAND_MS * 2)
    ax.set_title(f"{scenario} (above the line: lost requests, a row per stage)", fontsize=10)
    ax.set_xlabel("time since load started (s)")
    ax.set_ylabel("latency (ms)")


def figure(results, scenarios=None):
    """A figure with one timeline panel per scenario."""
    import matplotlib.pyplot as plt  # headless, matplotlib picks Agg by itself
    scenarios = scenarios or list(dict.fromkeys(r.scenario for r in results))
    panel_columns = 2 if len(scenarios) > 1 else 1
    rows = (len(scenarios) + panel_columns - 1) // panel_columns
    fig, axes = plt.subplots(rows, panel_columns, figsize=(6.5 * panel_columns, 3.2 * rows), squeeze=False)
    for ax, scenario in zip(axes.flat, scenarios):
        draw_timeline(ax, results, scenario)
    for ax in axes.flat[len(scenarios):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", markerscale=8)
    fig.tight_layout(rect=(0, 0, 0.9 if panel_columns == 1 else 0.93, 1))
    return fig


def plot(results, path):
    """The report's PNG: every scenario's timeline."""
    import matplotlib.pyplot as plt
    fig = figure(results)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write(results, directory, backend):
    """results.json, report.md and scoreboard.png under `directory`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps([r.to_dict() for r in results]))
    plot(results, directory / "scoreboard.png")
    (directory / "report.md").write_text(markdown(results, backend, "scoreboard.png"))
    return directory / "report.md"
