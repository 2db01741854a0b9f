"""The demo's estimate is computed from the runs themselves (each
scenario's expected length on each stage's spec, and what a backend adds
around a run), so it stays true when stages or scenarios change."""

import dataclasses
import re

from support import ROOT, STAGES
from workshop import __main__ as cli
from workshop import demo_estimate, parallel_runs, report
from workshop.manifests import load_stage
from workshop.scenarios import SCENARIOS


def test_the_kube_estimate_one_at_a_time_is_every_run_one_after_the_other():
    """The notebooks' run_all on kube: one run at a time, in the shared namespace."""
    found = demo_estimate.estimate(STAGES, list(SCENARIOS), "kube")
    assert set(found.per_scenario) == set(SCENARIOS)
    specs = {stage: load_stage(stage) for stage in STAGES}
    runs = [demo_estimate.run_s(specs[stage], name, "kube") for stage in STAGES for name in SCENARIOS]
    assert found.total_s == sum(runs)
    pairs = [(stage, name) for stage in STAGES for name in SCENARIOS]
    assert demo_estimate.left_s(pairs, "kube") == found.total_s and demo_estimate.left_s([], "kube") == 0


def test_the_kube_demo_is_estimated_as_run_all_schedules_it_and_within_15_minutes():
    """KUBE_JOBS at once, each in its own namespace, longest first; then the
    latency runs one at a time."""
    jobs = parallel_runs.KUBE_JOBS
    found = demo_estimate.estimate(STAGES, list(SCENARIOS), "kube", jobs)
    assert found.total_s <= 15 * 60, found.line()
    assert abs(sum(found.per_scenario.values()) - found.total_s) < 1e-6  # each scenario's share of it
    specs = {stage: load_stage(stage) for stage in STAGES}
    runs = {(stage, name): demo_estimate.run_s(specs[stage], name, "kube", own_namespace=True)
            for stage in STAGES for name in SCENARIOS}
    quiet = [s for (_, name), s in runs.items() if SCENARIOS[name].measures_latency]
    busy = [s for (_, name), s in runs.items() if not SCENARIOS[name].measures_latency]
    assert found.total_s == demo_estimate.makespan_s(busy, jobs) + sum(quiet)
    assert sum(busy) / jobs <= demo_estimate.makespan_s(busy, jobs) <= sum(busy) / jobs + max(busy)
    assert demo_estimate.left_s(list(runs), "kube", jobs) == found.total_s
    assert found.total_s < demo_estimate.estimate(STAGES, list(SCENARIOS), "kube").total_s / 2


def test_each_run_starts_when_one_ends_longest_first():
    assert demo_estimate.makespan_s([3, 3, 6], 2) == 6     # 6 | 3 then 3
    assert demo_estimate.makespan_s([5, 4, 3, 3, 3], 2) == 10  # 5, 3 | 4, 3, 3
    assert demo_estimate.makespan_s([5, 4, 3], 1) == 12


def test_a_longer_grace_period_or_a_slower_probe_lengthens_the_estimate():
    spec = load_stage(STAGES[-1])
    longer_grace = dataclasses.replace(spec, grace_s=spec.grace_s + 20)
    assert demo_estimate.run_s(longer_grace, "pod-kill", "kube") > demo_estimate.run_s(spec, "pod-kill", "kube")
    slower = dataclasses.replace(spec, readiness=dataclasses.replace(spec.readiness, period_s=spec.readiness.period_s + 5))
    assert demo_estimate.run_s(slower, "steady", "kube") == demo_estimate.run_s(spec, "steady", "kube") + 5


def test_the_demo_says_its_estimate_first_and_how_much_is_left_as_it_goes(monkeypatch, capsys):
    def run_all(stages, scenarios, backend, jobs, progress, backend_options, reuse_earlier=True):
        assert not reuse_earlier, "a demo measures: it never replays earlier results"
        progress("[ 1/2] ...")
        return []
    monkeypatch.setattr(parallel_runs, "run_all", run_all)
    monkeypatch.setattr(report, "write", lambda results, out, backend: report.Path(out) / "report.md")
    monkeypatch.setattr(cli, "backend_options", lambda args, stages: {})
    cli.demo(cli.parse_args(["demo", "--backend", "kube", "--stage", "04", "--scenario", "steady"]))
    first = capsys.readouterr().out.splitlines()[0]
    expected = demo_estimate.estimate(["04-shutdown"], ["steady"], "kube", parallel_runs.KUBE_JOBS)
    assert first.endswith(expected.line()) and first.startswith("1 scenarios x 1 stages on the kube backend")


def test_the_readme_says_the_kube_demos_estimate():
    readme = (ROOT / "README.md").read_text()
    paragraph = readme[readme.index("`python -m workshop demo --backend kube` makes"):].split("\n\n")[0]
    (minutes,) = re.findall(r"about (\d+) minutes", paragraph)
    found = demo_estimate.estimate(STAGES, list(SCENARIOS), "kube", parallel_runs.KUBE_JOBS)
    assert int(minutes) == round(found.total_s / 60)
    assert f"{len(STAGES) * len(SCENARIOS)} runs" in paragraph and "three at a time" in paragraph
    assert parallel_runs.KUBE_JOBS == 3
