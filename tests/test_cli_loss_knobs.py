"""`jaxalign train dpo` loss knobs: each loss at its own defaults (SimPO's beta 2.0 and gamma
0.5), a knob the loss does not use exits 2 naming it, and `loss.reference_free=true` trains
without any reference model, its implicit rewards beta * log pi."""

import json
import subprocess
import sys

import pytest
import yaml

from jaxalign.cli.main import main
from jaxalign.training import runs, setup
from tests.training import subprocess_runs

TINY = ["--no-progress", "--set", "loop.steps=2", "--set", "loop.log_every=1",
        "--set", "loop.checkpoint_every=0", "--set", "data.num_train=32",
        "--set", "data.num_eval=16", "--set", "data.batch_size=8",
        "--set", "data.eval_batch_size=16", "--set", "model.num_layers=1"]


def _jaxalign(*args):
  return subprocess.run([sys.executable, "-m", "jaxalign.cli.main", *args],
                        env=subprocess_runs.ENV, capture_output=True, text=True, timeout=300)


def _metric_lines(output_dir):
  with open(output_dir / "metrics.jsonl") as f:
    lines = [json.loads(line) for line in f]
  return [{k.split("/", 1)[1]: v for k, v in line.items() if "/" in k} for line in lines]


def _assert_rewards_are(beta, output_dir):
  """Every logged rewards/{chosen,rejected} is beta times logps/{chosen,rejected}: the beta
  the run trained with, read back from its metrics."""
  lines = [m for m in _metric_lines(output_dir) if "rewards/chosen" in m]
  assert len(lines) >= 3  # two train steps and the final eval
  for m in lines:
    for side in ("chosen", "rejected"):
      assert m[f"rewards/{side}"] == pytest.approx(beta * m[f"logps/{side}"], rel=1e-5), m


def test_simpo_trains_at_its_own_beta_and_gamma(tmp_path):
  result = _jaxalign("train", "dpo", "--loss", "simpo", "--output-dir", str(tmp_path), *TINY)
  assert result.returncode == 0, result.stderr
  with open(tmp_path / "config.yaml") as f:
    loss = yaml.safe_load(f)["loss"]
  assert (loss["beta"], loss["gamma"], loss["alpha"]) == (2.0, 0.5, None)
  _assert_rewards_are(2.0, tmp_path)


def test_a_knob_the_loss_does_not_use_exits_2_naming_it(tmp_path):
  result = _jaxalign("train", "dpo", "--loss", "dpo", "--set", "loss.gamma=1",
                     "--output-dir", str(tmp_path / "run"), *TINY)
  assert result.returncode == 2, (result.stdout, result.stderr)
  lines = result.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("jaxalign: error: "), result.stderr
  assert "loss.gamma" in lines[0] and "simpo" in lines[0]
  assert not (tmp_path / "run").exists()  # rejected before anything is built or written


def test_reference_free_trains_without_a_reference(tmp_path, monkeypatch):
  def no_reference(*args, **kwargs):
    raise AssertionError("a reference-free run loaded or ran a reference model")
  monkeypatch.setattr(setup, "load_reference", no_reference)
  monkeypatch.setattr(runs, "precompute_reference", no_reference)
  code = main(["train", "dpo", "--output-dir", str(tmp_path), "--set", "loss.reference_free=true",
               *TINY])
  assert code == 0
  with open(tmp_path / "config.yaml") as f:
    assert yaml.safe_load(f)["loss"]["reference_free"] is True
  _assert_rewards_are(0.1, tmp_path)  # DPO's beta; logps summed, log pi_ref = 0
