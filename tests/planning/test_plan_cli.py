"""``jaxalign plan`` end to end (subprocesses on 8 host CPU devices): the report's categories,
params bytes per device against an independent count, the fit verdict, suggestions."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

TINY = ["--set", "model.preset=tiny_gpt2", "--set", "data.max_length=64",
        "--set", "data.batch_size=8", "--set", "mesh.data=2", "--set", "mesh.fsdp=4"]
FSDP = 4


def _plan(tmp_path, task, *args, name="plan"):
  out = tmp_path / f"{name}.json"
  env = dict(os.environ, JAX_PLATFORMS="cpu")
  env.pop("XLA_FLAGS", None)  # the CLI asks for cpu:8 itself
  result = subprocess.run([sys.executable, "-m", "jaxalign.cli.main", "plan", task,
                           "--topology", "cpu:8", "--json", str(out), *TINY, *args],
                          capture_output=True, text=True, env=env, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(out.read_text()), result.stdout


def _expected_params_bytes(task: str) -> int:
  """Bytes per device of the tiny policy's params, counted here: 4 bytes each, a leaf of at
  least 1024 elements split FSDP ways when one of its dims divides (else whole)."""
  from jaxalign.config import RunConfig
  from jaxalign.models import init_params
  from jaxalign.training import setup
  run = RunConfig(task=task)
  config = setup.model_config(run, setup.vocab_overrides(run))
  shapes = jax.eval_shape(lambda k: init_params(config, k), jax.random.PRNGKey(0))
  total = 0
  for leaf in jax.tree_util.tree_leaves(shapes):
    n = int(np.prod(leaf.shape))
    split = n >= 1024 and any(d % FSDP == 0 for d in leaf.shape)
    total += 4 * (n // FSDP if split else n)
  return total


def _step(report):
  return next(p for p in report["programs"] if p["name"] == "train step")


def test_dpo_cached_report_and_verdicts(tmp_path):
  report, stdout = _plan(tmp_path, "dpo", "--hbm-gib", "1000")
  step = _step(report)
  assert report["platform"] == "cpu" and "CPU compile" in stdout
  assert report["mesh"] == {"data": 2, "fsdp": 4, "tensor": 1}
  for name in ("params", "opt_state", "batch"):
    assert step["arguments"][name] > 0
  assert "reference" not in step["arguments"]  # cached: log-probs ride in the batch
  assert step["temporaries"] > 0 and step["total"] > step["arguments"]["params"]
  assert step["arguments"]["params"] == _expected_params_bytes("dpo")
  assert report["fits"] is True and step["fits"] is True and not report["suggestions"]
  assert "verdict: fits" in stdout
  small, stdout = _plan(tmp_path, "dpo", "--hbm-gib", "0.0001", name="small")
  assert small["fits"] is False and "does not fit" in stdout
  keys = [s for item in small["suggestions"] for s in item["set"]]
  assert "model.remat=true" in keys and "model.param_dtype=bfloat16" in keys
  assert "model.lora.rank=16" in keys and "--set model.remat=true" in stdout


def test_dpo_in_step_holds_the_reference(tmp_path):
  report, _ = _plan(tmp_path, "dpo", "--set", "loss.reference=in_step", "--hbm-gib", "1000")
  step = _step(report)
  assert step["arguments"]["reference"] == step["arguments"]["params"]


def test_sft_and_grpo(tmp_path):
  sft, _ = _plan(tmp_path, "sft", "--hbm-gib", "1000", name="sft")
  assert _step(sft)["arguments"]["params"] == _expected_params_bytes("sft")
  assert "reference" not in _step(sft)["arguments"]
  grpo, stdout = _plan(tmp_path, "grpo", "--set", "grpo.kl_coef=0.05", "--set",
                       "grpo.max_new_tokens=8", "--hbm-gib", "1000", name="grpo")
  names = [p["name"] for p in grpo["programs"]]
  assert names == ["sampler", "experience", "train step"]
  assert _step(grpo)["arguments"]["reference"] == _step(grpo)["arguments"]["params"]
  sampler = grpo["programs"][0]
  assert "prompts" in sampler["arguments"] and "opt_state" in sampler["held"]
  assert "sampler" in stdout


@pytest.mark.parametrize("topology", ["v9z:4x4", "tpu", "cpu:0"])
def test_bad_topology_is_one_line(topology):
  result = subprocess.run([sys.executable, "-m", "jaxalign.cli.main", "plan", "dpo",
                           "--topology", topology], capture_output=True, text=True,
                          timeout=120)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("jaxalign: error: --topology")


def test_bad_key_is_the_train_error():
  result = subprocess.run([sys.executable, "-m", "jaxalign.cli.main", "plan", "dpo",
                           "--topology", "cpu", "--set", "model.nope=1"],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  assert result.stderr.strip().startswith("jaxalign: error:") and "model.nope" in result.stderr


def test_grpo_lora_sampler_reads_base_and_adapters(tmp_path):
  report, _ = _plan(tmp_path, "grpo", "--set", "model.lora.rank=4", "--set",
                    "grpo.kl_coef=0.05", "--set", "grpo.max_new_tokens=8", "--hbm-gib", "1000",
                    name="grpo_lora")
  sampler, experience, step = report["programs"]
  assert "frozen base (LoRA)" in sampler["arguments"]
  assert "frozen base (LoRA)" in experience["arguments"] and "reference" not in step["arguments"]
  assert step["arguments"]["params"] < step["arguments"]["frozen base (LoRA)"]


def test_largest_batch_is_bisected_between_a_plan_that_fits_and_one_that_does_not(tmp_path):
  report, stdout = _plan(tmp_path, "dpo", "--hbm-gib", "0.01", "--largest-batch")
  search = report["largest_batch"]
  largest, failing = search["largest"], search["smallest_failing"]
  assert search["key"] == "data.batch_size" and search["configured"] == 8
  assert largest % 8 == 0 and failing == largest + 8, search  # bisected to the multiple of 8
  peaks = [row["peak_bytes"] for row in search["tried"]]
  assert peaks == sorted(peaks) and len(set(peaks)) == len(peaks)  # the batch really changed
  assert f"largest data.batch_size that fits: {largest} ({failing} does not)" in stdout
  # Planned on their own (the batch set on the command line), the two ends agree.
  fits, _ = _plan(tmp_path, "dpo", "--hbm-gib", "0.01", "--set", f"data.batch_size={largest}",
                  name="fits")
  over, _ = _plan(tmp_path, "dpo", "--hbm-gib", "0.01", "--set", f"data.batch_size={failing}",
                  name="over")
  assert fits["fits"] is True and over["fits"] is False


def test_largest_batch_needs_a_memory_size():
  result = subprocess.run([sys.executable, "-m", "jaxalign.cli.main", "plan", "dpo",
                           "--topology", "cpu", "--largest-batch"],
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 2
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and "--largest-batch needs" in lines[0] and "--hbm-gib" in lines[0]
