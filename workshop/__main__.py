"""python -m workshop <command>: the workshop's command line.

  demo     every scenario on every stage, the scoreboard, report/ (make demo)
  run      one scenario on one stage
  tour     one line per stage: its new capability at work (a few seconds)
  lesson   what a stage adds to the one before it, as code
  exercise grade a stage's exercise (its chapter says what to change)
  echo     send one message to an echo server, print the reply
  fault    send a fault (crash, hang, slow:<ms>) to a server started with ECHO_FAULTS=1
  metrics  read a server's /metrics, print the samples named
  images   build every stage's image and the load generator's into minikube
  doctor   is the cluster ready for the notebooks? one line per check, and its fix
"""

import argparse
import sys
import time

from . import client, exercises, lesson, report, tour
from .backends.minikube import ContextRefused, ImageBuildFailed
from .interrupts import stop_on_sigterm
from .parallel_runs import JOBS, KUBE_JOBS
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
    demo.add_argument("--jobs", type=int, help=f"runs at once (default: {JOBS} locally; on kube {KUBE_JOBS}, "
                                               "each in a namespace of its own, or 1 in cloudnative-echo)")
    demo.add_argument("--out", default="report", help="where report.md and scoreboard.png go")
    run = commands.add_parser("run", help="one scenario on one stage")
    run.add_argument("--stage", required=True)
    run.add_argument("--scenario", required=True, choices=list(SCENARIOS))
    run.add_argument("--backend", choices=["local", "kube"], default="local")
    for command in (demo, run):
        command.add_argument("--context", help="kube: this kubeconfig context (default: the current one, "
                                               "which must be a minikube profile unless --no-build)")
        command.add_argument("--no-build", action="store_true",
                             help="kube: do not build the images (you built them into the cluster yourself)")
    commands.add_parser("tour", help="one line per stage: its new capability at work")
    lesson = commands.add_parser("lesson", help="what a stage adds to the one before it, as code")
    lesson.add_argument("stage")
    exercise = commands.add_parser("exercise", help="grade a stage's exercise")
    exercise.add_argument("stage")
    exercise.add_argument("--backend", choices=["local", "kube"], default="local")
    echo = commands.add_parser("echo", help="send one message, print the reply")
    echo.add_argument("endpoint", help="e.g. tcp://127.0.0.1:5555")
    echo.add_argument("frames", nargs="+", help="the message's frames")
    echo.add_argument("--timeout", type=float, default=2.0, help="seconds to wait for the reply")
    metrics = commands.add_parser("metrics", help="read /metrics, print the samples named")
    metrics.add_argument("url", help="e.g. http://127.0.0.1:8000/metrics")
    metrics.add_argument("names", nargs="*", help="sample names to print (default: every echo_ one)")
    fault = commands.add_parser("fault", help="send a fault to a server started with ECHO_FAULTS=1")
    fault.add_argument("endpoint")
    fault.add_argument("what", metavar="command", help="crash, hang or slow:<ms>")
    images = commands.add_parser("images", help="build every stage's image, and the load generator's, "
                                                "into minikube")
    doctor = commands.add_parser("doctor", help="check the cluster is ready for the notebooks")
    for command in (images, doctor):
        command.add_argument("--context", help="this kubeconfig context, a minikube profile's "
                                               "(default: the current one)")
    return parser.parse_args(argv)


def backend_options(args, stages):
    """What each run's backend is made with. On kube: the context, checked
    once, and the images built once (not once per run)."""
    if args.backend != "kube":
        return {}
    from .backends import minikube
    known = {} if args.no_build else minikube.profiles()  # asked once: seconds on VM drivers
    context = minikube.choose_context(args.context, build_images=not args.no_build, known=known)
    if not args.no_build and context not in known:
        print(f"{context} is not a minikube profile: using the images already in that cluster", flush=True)
    elif not args.no_build:
        minikube.build_images(stages, profile=context, progress=lambda line: print(line, flush=True),
                              nodes=known[context])
    return {"context": context, "build_images": False}


def demo(args):
    stages = [resolve(s) for s in args.stage] if args.stage else all_stages()
    scenarios = args.scenario or list(SCENARIOS)
    from .demo_estimate import estimate
    jobs = args.jobs or (KUBE_JOBS if args.backend == "kube" else JOBS)
    print(f"{len(scenarios)} scenarios x {len(stages)} stages on the {args.backend} backend, "
          f"{estimate(stages, scenarios, args.backend, jobs).line()}", flush=True)
    started = time.monotonic()
    options = backend_options(args, stages)
    from .parallel_runs import run_all
    results = run_all(stages, scenarios, backend=args.backend, jobs=jobs,
                      progress=lambda line: print(line, flush=True), backend_options=options,
                      reuse_earlier=False)  # a demo measures: it never replays another's results
    print()
    print(report.scoreboard(results))
    path = report.write(results, args.out, args.backend)
    print(f"\n{len(results)} runs in {time.monotonic() - started:.0f} s; report: {path}, "
          f"plot: {path.parent / 'scoreboard.png'}")


def run(args):
    from .backends import make_backend
    from .parallel_runs import earlier_results
    from .scenarios import run_scenario
    result = earlier_results(args.backend).get((resolve(args.stage), args.scenario))  # WORKSHOP_RESULTS
    if result is None:
        with make_backend(args.backend, **backend_options(args, [resolve(args.stage)])) as backend:
            result = run_scenario(backend, args.stage, args.scenario)
    print(report.scoreboard([result]))


def images(args):
    from .backends import minikube
    known = minikube.profiles()
    context = minikube.choose_context(args.context, known=known)
    if context not in known:
        raise ContextRefused(f"{context!r} is not a minikube profile: build the images into that cluster "
                             "yourself (each chapter has the command), or use minikube:\n"
                             "  kubectl config use-context minikube")
    minikube.build_images(all_stages(), profile=context, progress=lambda line: print(line, flush=True),
                          nodes=known[context])


def echo(args):
    reply = client.echo_frames(args.endpoint, [frame.encode() for frame in args.frames], args.timeout)
    if reply is None:
        print(f"no reply from {args.endpoint} within {args.timeout:g} s", file=sys.stderr)
        return 1
    print(reply)
    return 0


def metrics(args):
    from urllib.request import urlopen
    with urlopen(args.url, timeout=5) as response:
        lines = response.read().decode().splitlines()
    names = tuple(args.names or ["echo_"])
    for line in lines:
        if line.startswith(names) and not line.split()[0].endswith("_created"):
            print(line)


def fault(args):
    client.send_fault(args.endpoint, args.what)
    print(f"sent {args.what} to {args.endpoint}")  # no reply awaited: a crashed or hung replica sends none


def doctor(args):
    from .doctor import run as run_checks
    return run_checks(context=args.context)


def main(argv=None):
    args = parse_args(argv)
    stop_on_sigterm()
    try:
        command = {"demo": demo, "run": run, "tour": lambda _: tour.run(), "images": images,
                   "doctor": doctor, "echo": echo, "fault": fault, "metrics": metrics,
                   "lesson": lambda args: print(lesson.text(args.stage)),
                   "exercise": lambda args: exercises.grade(args.stage, args.backend)}[args.command]
        return command(args) or 0
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        return 130
    except (ContextRefused, ImageBuildFailed) as refused:
        print(refused, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
