"""``jaxalign plan <task> --topology v5e:4x4``: per-device memory of the run's programs,
compiled for the topology with abstract params (no weights), and whether they fit."""

from __future__ import annotations

import json
import os
import sys

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
  plan.add_argument("--largest-batch", action="store_true", help="also search the largest "
                    "batch that fits (data.batch_size; ppo.rollout_batch_size; "
                    "grpo.prompts_per_iteration): multiples of the configured value, each "
                    "compiled")


def run_plan_command(args) -> int:
  from jaxalign.planning.chips import hbm_bytes, parse_topology, prepare_host
  topology = parse_topology(args.topology)  # a bad topology: one line, before JAX starts
  if args.largest_batch and hbm_bytes(topology, args.hbm_gib) is None:
    print(f"jaxalign: error: --largest-batch needs a memory size to fit against: "
          f"{args.topology} has none, give --hbm-gib", file=sys.stderr)
    return 2
  prepare_host(topology)
  from jaxalign.config import RunConfig, load_config
  from jaxalign.config.validate import resolve_run, validate_run
  overrides = [f"task={args.task}"] + args.overrides
  if args.task == "rloo":  # as `jaxalign train rloo`
    overrides.insert(1, "grpo.advantage=rloo")
  run = resolve_run(load_config(RunConfig, args.config, overrides))
  validate_run(run)
  from jaxalign.planning import format_report, plan
  log = lambda line: print(line, flush=True)
  report = plan(run, args.topology, hbm_gib=args.hbm_gib, log=log)
  print(format_report(report))
  if args.largest_batch:
    from jaxalign.planning.search import format_search, largest_batch
    report["largest_batch"] = largest_batch(run, args.topology, hbm_gib=args.hbm_gib, log=log,
                                            first_report=report)
    print(format_search(report["largest_batch"]))
  if args.json_path:
    os.makedirs(os.path.dirname(os.path.abspath(args.json_path)), exist_ok=True)
    with open(args.json_path, "w") as f:
      json.dump(report, f, indent=1)
  return 0
