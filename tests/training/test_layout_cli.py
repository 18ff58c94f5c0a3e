"""`jaxalign train` gives the same numbers whatever the device layout: DPO and the reward
model with `data.shared_prompt` (the default) against the two-row layout (rm: unpacked), SFT
with `data.packing` (the default) against padded rows, the reward model with packed pairs (the
default) against the shared-prompt layout, DPO with `model.scan_layers` against unrolled
layers. Each pair of runs trains from the same seed on the
same synthetic rows; the logged losses and the final eval must agree to float rounding."""

import json
import subprocess
import sys

import pytest

from tests.training import subprocess_runs

TINY = ["--no-progress", "--set", "loop.steps=2", "--set", "loop.log_every=1",
        "--set", "loop.checkpoint_every=0", "--set", "data.num_train=32",
        "--set", "data.num_eval=24", "--set", "data.batch_size=8",
        "--set", "data.eval_batch_size=16", "--set", "model.num_layers=1"]


def _train(task, output_dir, *sets):
  args = [a for s in sets for a in ("--set", s)]
  result = subprocess.run([sys.executable, "-m", "jaxalign.cli.main", "train", task,
                           "--output-dir", str(output_dir), *TINY, *args],
                          env=subprocess_runs.ENV, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(output_dir / "metrics.jsonl") as f:
    lines = [json.loads(line) for line in f]
  with open(output_dir / "eval.json") as f:
    final = json.load(f)
  losses = [line["train/loss"] for line in lines if "train/loss" in line]
  return losses, final


def _numbers(tree, prefix=""):
  if isinstance(tree, dict):
    return {k: v for key, sub in tree.items() for k, v in _numbers(sub, f"{prefix}{key}/").items()}
  if isinstance(tree, (int, float)) and not isinstance(tree, bool):
    return {prefix.rstrip("/"): float(tree)}
  return {}


LAYOUTS = [("dpo", "data.shared_prompt", ()), ("rm", "data.shared_prompt", ("data.packing=false",)),
           ("sft", "data.packing", ()), ("rm", "data.packing", ()),
           ("dpo", "model.scan_layers", ())]


@pytest.mark.parametrize("task, switch, fixed", [pytest.param(*case, id=f"{case[0]}-{case[1]}")
                                                 for case in LAYOUTS])
def test_the_layout_does_not_change_the_run(tmp_path, task, switch, fixed):
  losses_on, eval_on = _train(task, tmp_path / "on", f"{switch}=true", *fixed)
  losses_off, eval_off = _train(task, tmp_path / "off", f"{switch}=false", *fixed)
  assert len(losses_on) == 2 and losses_on == pytest.approx(losses_off, rel=1e-5, abs=1e-6)
  on, off = _numbers(eval_on), _numbers(eval_off)
  metrics = [k for k in on if "loss" in k or "accuracy" in k or "logps" in k]
  assert metrics and on.keys() == off.keys()
  for key in on:
    if "seconds" in key or "per_s" in key:
      continue
    assert on[key] == pytest.approx(off[key], rel=1e-4, abs=1e-5), key
