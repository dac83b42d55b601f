"""`python -m swapalloc ps [--json]` and `python -m swapalloc top [--interval S]
[--iterations N]`: the processes using swapalloc, their pools and the devices' pressure."""
from __future__ import annotations

import argparse
import sys

from ._ps import ps, top


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m swapalloc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser("ps", help="list the processes using swapalloc and their pools")
    listing.add_argument("--json", action="store_true", help="print the records as JSON")
    live = commands.add_parser("top", help="the same, refreshed live")
    live.add_argument("--interval", type=float, default=1.0, help="seconds between refreshes")
    live.add_argument("--iterations", type=int, default=None, help="stop after N refreshes")
    args = parser.parse_args(argv)
    if args.command == "ps":
        print(ps(as_json=args.json))
    else:
        if args.interval <= 0:
            parser.error(f"--interval {args.interval}: must be above 0 seconds")
        top(args.interval, args.iterations)
    return 0


if __name__ == "__main__":
    sys.exit(main())
