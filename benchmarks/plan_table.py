"""docs/tpu.md's planner table: Llama-3-8B DPO / PPO / GRPO, full fine-tune and LoRA, on
v5e-16, v5p-8 and v5p-32, from real runs of ``jaxalign plan`` (needs libtpu:
``pip install -e '.[tpu]'``; no TPU). Each row is one ``jaxalign plan`` whose JSON report
goes to ``--out``; rows already there are not rerun. Then the markdown table is printed.

  python benchmarks/plan_table.py --out runs/plan_table [--only dpo] [--slices v5e-16]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

# Llama-3-8B's config.json (meta-llama/Meta-Llama-3-8B): only the shapes matter here.
LLAMA3_8B = {"architectures": ["LlamaForCausalLM"], "model_type": "llama",
             "vocab_size": 128256, "hidden_size": 4096, "intermediate_size": 14336,
             "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 8,
             "max_position_embeddings": 8192, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
             "hidden_act": "silu", "tie_word_embeddings": False, "bos_token_id": 128000,
             "eos_token_id": 128001, "torch_dtype": "bfloat16"}
TOPOLOGIES = {"v5e-16": "v5e:4x4", "v5p-8": "v5p:2x2x1", "v5p-32": "v5p:2x2x4"}
COMMON = ["model.scan_layers=true", "model.param_dtype=bfloat16",
          "model.compute_dtype=bfloat16", "model.remat=true", "mesh.data=1", "mesh.fsdp=-1"]
# (name, task, overrides): the batch is the one the table reports.
RUNS = [
    ("dpo", "dpo", ["data.max_length=1024", "data.batch_size=32"]),
    ("dpo-lora", "dpo", ["data.max_length=1024", "data.batch_size=32", "model.lora.rank=16"]),
    ("ppo", "ppo", ["data.max_length=1024", "ppo.max_new_tokens=512",
                    "ppo.rollout_batch_size=64", "ppo.num_minibatches=4"]),
    ("grpo", "grpo", ["data.max_length=1024", "grpo.max_new_tokens=512",
                      "grpo.prompts_per_iteration=16", "grpo.group_size=8",
                      "grpo.num_minibatches=4", "grpo.kl_coef=0.04"]),
    ("ppo-lora", "ppo", ["data.max_length=1024", "ppo.max_new_tokens=512",
                         "ppo.rollout_batch_size=64", "ppo.num_minibatches=4",
                         "model.lora.rank=16"]),
    ("grpo-lora", "grpo", ["data.max_length=1024", "grpo.max_new_tokens=512",
                           "grpo.prompts_per_iteration=16", "grpo.group_size=8",
                           "grpo.num_minibatches=4", "grpo.kl_coef=0.04",
                           "model.lora.rank=16"]),
]


def write_models(folder: str) -> tuple[str, str]:
  """The policy's config.json and a reward model's jaxalign metadata (no weights)."""
  from jaxalign.models import config_from_hf
  from jaxalign.models.params_io import CONFIG_FILE
  import dataclasses
  policy, rm = os.path.join(folder, "llama3-8b"), os.path.join(folder, "llama3-8b-rm")
  os.makedirs(policy, exist_ok=True)
  os.makedirs(rm, exist_ok=True)
  with open(os.path.join(policy, "config.json"), "w") as f:
    json.dump(LLAMA3_8B, f, indent=1)
  config = config_from_hf(LLAMA3_8B, param_dtype="bfloat16", dtype="bfloat16")
  with open(os.path.join(rm, CONFIG_FILE), "w") as f:
    json.dump({"kind": "reward_model", "config": dataclasses.asdict(config)}, f, indent=1)
  return policy, rm


def command(jaxalign: str, name: str, task: str, overrides: list, topology: str, policy: str,
            rm: str, out: str) -> list[str]:
  sets = COMMON + [f"model.path={policy}"] + overrides
  if task == "ppo":
    sets.append(f"online.reward_model={rm}")
  args = [jaxalign, "plan", task, "--topology", topology, "--json", out]
  for s in sets:
    args += ["--set", s]
  return args


def run_all(args) -> None:
  policy, rm = write_models(os.path.join(args.out, "models"))
  for name, task, overrides in RUNS:
    if args.only and name not in args.only:
      continue
    for label, topology in TOPOLOGIES.items():
      if args.slices and label not in args.slices:
        continue
      out = os.path.join(args.out, f"{name}_{label}.json")
      if os.path.exists(out):
        continue
      cmd = command(args.jaxalign, name, task, overrides, topology, policy, rm, out)
      print(" ".join(cmd), flush=True)
      start = time.time()
      result = subprocess.run(cmd, capture_output=True, text=True)
      with open(out.replace(".json", ".log"), "w") as f:
        f.write(result.stdout + result.stderr)
      print(f"  rc={result.returncode} in {time.time() - start:.0f} s", flush=True)


def _gib(n) -> str:
  return f"{n / 2 ** 30:.2f}"


def table(out: str) -> str:
  rows = ["| run | slice | mesh | batch | params | opt state | reference (LoRA: frozen base) | reward model / "
          "critic | peak per program (GiB) | HBM | fits | compile (s) |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|"]
  for name, task, overrides in RUNS:
    for label in TOPOLOGIES:
      path = os.path.join(out, f"{name}_{label}.json")
      if not os.path.exists(path):
        continue
      r = json.load(open(path))
      ll = r["long_lived_bytes"]
      mesh = "x".join(str(r["mesh"][a]) for a in ("data", "fsdp", "tensor"))
      batch = "; ".join(o for o in overrides if "batch" in o or "group" in o or
                        "prompts_per" in o or "max_" in o)
      peaks = ", ".join(f"{p['name']} {_gib(p['total'])}" for p in r["programs"])
      extra = ll.get("reward model", 0) + ll.get("critic / value head", 0)
      ref = ll.get("reference", 0) + ll.get("frozen base (LoRA)", 0)
      compile_s = " + ".join(f"{p['compile_seconds']:.0f}" for p in r["programs"])
      rows.append(f"| {name} | {label} ({r['topology']}) | {mesh} | {batch} | "
                  f"{_gib(ll['params'])} | {_gib(ll['opt_state'])} | {_gib(ref)} | "
                  f"{_gib(extra)} | {peaks} | {_gib(r['hbm_bytes_per_device'])} | "
                  f"{'yes' if r['fits'] else 'no'} | {compile_s} |")
  return "\n".join(rows)


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--out", default="runs/plan_table")
  parser.add_argument("--only", nargs="*", help="run names (dpo, dpo-lora, ppo, grpo, ppo-lora, grpo-lora)")
  parser.add_argument("--slices", nargs="*", help="slices (v5e-16, v5p-8, v5p-32)")
  parser.add_argument("--jaxalign", default=os.path.join(os.path.dirname(sys.executable),
                                                         "jaxalign"))
  parser.add_argument("--table-only", action="store_true")
  args = parser.parse_args(argv)
  if not args.table_only:
    run_all(args)
  print(table(args.out))


if __name__ == "__main__":
  main()
