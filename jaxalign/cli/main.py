"""The ``jaxalign`` command: train, eval, sample, demo."""

from __future__ import annotations

import argparse
import os
import sys


def _parser() -> argparse.ArgumentParser:
  from jaxalign.training.preference_losses import LOSS_NAMES
  parser = argparse.ArgumentParser(prog="jaxalign", description=__doc__)
  commands = parser.add_subparsers(dest="command", required=True)

  train = commands.add_parser("train", help="train a policy or reward model")
  train.add_argument("task", choices=["sft", "rm", "dpo"])
  train.add_argument("--config", help="YAML or JSON run config")
  train.add_argument("--set", dest="overrides", action="append", default=[],
                     metavar="KEY=VALUE", help="override a config key (repeatable)")
  train.add_argument("--loss", choices=LOSS_NAMES, help="DPO-family loss (dpo only)")
  train.add_argument("--output-dir", help="where the run writes (config.output_dir; default "
                     "$JAXALIGN_RUN_DIR when set)")
  train.add_argument("--no-progress", action="store_true")

  demo = commands.add_parser("demo", help="run the built-in end-to-end demo")
  demo.add_argument("--output-dir", default="runs/demo")
  demo.add_argument("--seed", type=int, default=0)
  demo.add_argument("--quick", action="store_true", help="fewer steps (a smoke run)")
  return parser


def _train(args) -> int:
  from jaxalign.config import RunConfig, load_config
  from jaxalign.training.runs import run_training
  overrides = [f"task={args.task}"] + args.overrides
  if args.loss:
    if args.task != "dpo":
      raise ValueError("--loss applies to 'jaxalign train dpo' only")
    overrides.append(f"loss.name={args.loss}")
  output_dir = args.output_dir or os.environ.get("JAXALIGN_RUN_DIR")
  if output_dir:
    overrides.append(f"output_dir={output_dir}")
  run = load_config(RunConfig, args.config, overrides)
  result = run_training(run, progress=not args.no_progress)
  print(" ".join(f"{k}={v:.4g}" for k, v in result.items()))
  return 0


def _demo(args) -> int:
  from jaxalign.cli.demo import DemoConfig, run_demo
  demo = DemoConfig(output_dir=args.output_dir, seed=args.seed)
  if args.quick:
    demo = DemoConfig(output_dir=args.output_dir, seed=args.seed, sft_steps=40, rm_steps=20,
                      dpo_steps=20, num_eval_prompts=64)
  run_demo(demo)
  return 0


def main(argv: list[str] | None = None) -> int:
  args = _parser().parse_args(argv)
  handlers = {"train": _train, "demo": _demo}
  try:
    return handlers[args.command](args)
  except Exception as error:  # noqa: BLE001 - shown to the user, exit non-zero
    from jaxalign.cli.errors import USER_ERRORS
    if not isinstance(error, USER_ERRORS):
      raise
    print(f"jaxalign: error: {error}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
