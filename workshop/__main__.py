"""python -m workshop <command>: the workshop's command line."""

import argparse

from . import tour


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m workshop", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("tour", help="one line per stage: its new capability at work")
    commands.add_parser("demo", help="what `make demo` runs")
    args = parser.parse_args(argv)
    if args.command in ("tour", "demo"):
        tour.run()


if __name__ == "__main__":
    main()
