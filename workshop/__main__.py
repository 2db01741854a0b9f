"""python -m workshop <command>: the workshop's command line.

  demo   every scenario on every stage, the scoreboard, report/ (make demo)
  run    one scenario on one stage
  tour   one line per stage: its new capability at work (a few seconds)
"""

import argparse
import sys
import time

from . import report, tour
from .interrupts import stop_on_sigterm
from .scenarios import SCENARIOS
from .stages import all_stages, resolve


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m workshop", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="the scoreboard: scenarios x stages")
    demo.add_argument("--backend", choices=["local", "kube"], default="local")
    demo.add_argument("--stage", action="append", help="a stage (repeatable), e.g. 04 or 04-shutdown")
    demo.add_argument("--scenario", action="append", choices=list(SCENARIOS), help="repeatable")
    demo.add_argument("--jobs", type=int, default=3, help="runs at once on the local backend")
    demo.add_argument("--quick", action="store_true", help="shorter runs where a lesson allows")
    demo.add_argument("--out", default="report", help="where report.md and scoreboard.png go")
    run = commands.add_parser("run", help="one scenario on one stage")
    run.add_argument("--stage", required=True)
    run.add_argument("--scenario", required=True, choices=list(SCENARIOS))
    run.add_argument("--backend", choices=["local", "kube"], default="local")
    run.add_argument("--quick", action="store_true")
    commands.add_parser("tour", help="one line per stage: its new capability at work")
    return parser.parse_args(argv)


def demo(args):
    stages = [resolve(s) for s in args.stage] if args.stage else all_stages()
    scenarios = args.scenario or list(SCENARIOS)
    print(f"{len(scenarios)} scenarios x {len(stages)} stages on the {args.backend} backend", flush=True)
    started = time.monotonic()
    from .parallel_runs import run_all
    results = run_all(stages, scenarios, backend=args.backend, jobs=args.jobs, quick=args.quick,
                      progress=lambda line: print(line, flush=True))
    print()
    print(report.scoreboard(results))
    path = report.write(results, args.out, args.backend)
    print(f"\n{len(results)} runs in {time.monotonic() - started:.0f} s; report: {path}, "
          f"plot: {path.parent / 'scoreboard.png'}")


def run(args):
    from .backends import make_backend
    from .scenarios import run_scenario
    with make_backend(args.backend) as backend:
        result = run_scenario(backend, args.stage, args.scenario, quick=args.quick)
    print(report.scoreboard([result]))


def main(argv=None):
    args = parse_args(argv)
    stop_on_sigterm()
    try:
        {"demo": demo, "run": run, "tour": lambda _: tour.run()}[args.command](args)
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
