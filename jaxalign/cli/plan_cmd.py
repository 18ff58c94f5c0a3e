"""``jaxalign plan <task> --topology v5e:4x4``: per-device memory of the run's programs,
compiled for the topology with abstract params (no weights), and whether they fit."""

from __future__ import annotations

import json
import os

TASKS = ("sft", "rm", "dpo", "ppo", "online-dpo", "grpo", "rloo")


def add_plan_command(commands) -> None:
  plan = commands.add_parser("plan", help="per-device memory of a run on a TPU topology "
                             "(compiled here, no TPU needed)")
  plan.add_argument("task", choices=TASKS)
  plan.add_argument("--topology", required=True, help="CHIP:SHAPE (v5e:4x4, v5p:2x2x1, "
                    "v4:2x2x1, v6e:2x2) or cpu / cpu:N (a CPU compile on host devices)")
  plan.add_argument("--config", help="YAML or JSON run config (as jaxalign train)")
  plan.add_argument("--set", dest="overrides", action="append", default=[],
                    metavar="KEY=VALUE", help="override a config key (repeatable)")
  plan.add_argument("--json", dest="json_path", metavar="PATH", help="write the report here")
  plan.add_argument("--hbm-gib", type=float, help="memory per device to fit against "
                    "(default: the chip's HBM)")


def run_plan_command(args) -> int:
  from jaxalign.planning.chips import parse_topology, prepare_host
  topology = parse_topology(args.topology)  # a bad topology: one line, before JAX starts
  prepare_host(topology)
  from jaxalign.config import RunConfig, load_config
  from jaxalign.config.validate import resolve_run, validate_run
  overrides = [f"task={args.task}"] + args.overrides
  if args.task == "rloo":  # as `jaxalign train rloo`
    overrides.insert(1, "grpo.advantage=rloo")
  run = resolve_run(load_config(RunConfig, args.config, overrides))
  validate_run(run)
  from jaxalign.planning import format_report, plan
  report = plan(run, args.topology, hbm_gib=args.hbm_gib, log=lambda line: print(
      line, flush=True))
  print(format_report(report))
  if args.json_path:
    os.makedirs(os.path.dirname(os.path.abspath(args.json_path)), exist_ok=True)
    with open(args.json_path, "w") as f:
      json.dump(report, f, indent=1)
  return 0
