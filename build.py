#!/usr/bin/env python
"""piximi-py developer entry point.

    python build.py                  # assemble the static site into dist/
    python build.py site [--force]   # same
    python build.py serve [--port N] # build if needed, serve dist/ with COOP/COEP
    python build.py train|export|evaluate  # model work (needs torch, ../shared/data)
"""

from __future__ import annotations

import argparse
import sys


# ---------------------------------------------------------------- web site
def cmd_site(args: argparse.Namespace) -> int:
    from tools.site import build_site

    build_site(force=args.force)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from tools.site import serve

    serve(port=args.port)
    return 0


def add_site_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("site", help="assemble dist/ (default command)")
    p.add_argument("--force", action="store_true", help="rebuild even if up to date")
    p.set_defaults(func=cmd_site)
    p = sub.add_parser("serve", help="build if needed and serve dist/ on localhost")
    p.add_argument("--port", type=int, default=8000)
    p.set_defaults(func=cmd_serve)


# ---------------------------------------------------------------- model work
def add_model_commands(sub: argparse._SubParsersAction) -> None:
    from training.cli import add_model_commands as add

    add(sub)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="build.py", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command")
    add_site_commands(sub)
    add_model_commands(sub)
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["site", *(argv or sys.argv[1:])])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
