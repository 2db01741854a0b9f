"""The demo's estimate is computed from the runs themselves (each
scenario's expected length on each stage's spec, and what a backend adds
around a run), so it stays true when stages or scenarios change."""

import dataclasses

from support import STAGES
from workshop import __main__ as cli
from workshop import demo_estimate, parallel_runs, report
from workshop.manifests import load_stage
from workshop.scenarios import SCENARIOS


def test_the_kube_estimate_is_every_run_one_after_the_other():
    found = demo_estimate.estimate(STAGES, list(SCENARIOS), "kube")
    assert set(found.per_scenario) == set(SCENARIOS)
    runs = [demo_estimate.run_s(load_stage(stage), name, "kube") for stage in STAGES for name in SCENARIOS]
    assert found.total_s == sum(runs)
    pairs = [(stage, name) for stage in STAGES for name in SCENARIOS]
    assert demo_estimate.left_s(pairs, "kube") == found.total_s and demo_estimate.left_s([], "kube") == 0


def test_a_longer_grace_period_or_a_slower_probe_lengthens_the_estimate():
    spec = load_stage(STAGES[-1])
    longer_grace = dataclasses.replace(spec, grace_s=spec.grace_s + 20)
    assert demo_estimate.run_s(longer_grace, "pod-kill", "kube") > demo_estimate.run_s(spec, "pod-kill", "kube")
    slower = dataclasses.replace(spec, readiness=dataclasses.replace(spec.readiness, period_s=spec.readiness.period_s + 5))
    assert demo_estimate.run_s(slower, "steady", "kube") == demo_estimate.run_s(spec, "steady", "kube") + 5


def test_the_demo_says_its_estimate_first_and_how_much_is_left_as_it_goes(monkeypatch, capsys):
    def run_all(stages, scenarios, backend, jobs, progress, backend_options):
        progress("[ 1/2] ...")
        return []
    monkeypatch.setattr(parallel_runs, "run_all", run_all)
    monkeypatch.setattr(report, "write", lambda results, out, backend: report.Path(out) / "report.md")
    monkeypatch.setattr(cli, "backend_options", lambda args, stages: {})
    cli.demo(cli.parse_args(["demo", "--backend", "kube", "--stage", "04", "--scenario", "steady"]))
    first = capsys.readouterr().out.splitlines()[0]
    expected = demo_estimate.estimate(["04-shutdown"], ["steady"], "kube")
    assert first.endswith(expected.line()) and first.startswith("1 scenarios x 1 stages on the kube backend")
