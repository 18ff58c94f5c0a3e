"""Entry point of the ``jaxalign`` command."""

from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(prog="jaxalign", description=__doc__)
  commands = parser.add_subparsers(dest="command", required=True)
  demo = commands.add_parser("demo", help="run the built-in end-to-end demo")
  demo.add_argument("--seed", type=int, default=0)
  return parser


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  if args.command == "demo":
    from jaxalign.cli.demo import run_demo
    run_demo(seed=args.seed)
  return 0


if __name__ == "__main__":
  sys.exit(main())
