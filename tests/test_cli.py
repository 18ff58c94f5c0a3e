"""The README's main job runs and does what it prints."""

import numpy as np

from jaxalign.cli.main import main
from jaxalign.cli.demo import run_demo


def test_demo_runs_end_to_end(capsys):
  result = run_demo(seed=0, new_tokens=4)
  assert result["logits_shape"] == (2, 8, 256)
  assert result["tokens"].shape == (2, 4)
  assert np.all(result["logprobs"] <= 0) and np.isfinite(result["logprobs"]).all()
  assert "greedy generation" in capsys.readouterr().out


def test_cli_entry_point_runs_demo():
  assert main(["demo", "--seed", "1"]) == 0
