"""Runs that stop early, through the CLI: a diverging run (the NaN guard, offline DPO, online
DPO, PPO) stops with the step and the metric, keeps its last good checkpoint and writes only
strict JSON; SIGTERM / SIGINT save a checkpoint at the current step and exit 143 / 130
without a traceback, and a rerun resumes to the same params as an uninterrupted run."""

import json
import re
import signal

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from jaxalign.cli.main import main
from jaxalign.config import RunConfig, load_config
from jaxalign.models import init_params, load_model
from jaxalign.training import setup
from jaxalign.training.run_dir import latest_checkpoint
from jaxalign.training.runs import reward_model_params
from tests.training import subprocess_runs
from tests.training.subprocess_runs import train_command as command

TINY = {"data.num_train": 64, "data.num_eval": 16, "data.batch_size": 8,
        "data.eval_batch_size": 16, "model.num_layers": 1, "loop.log_every": 1}
# Plain SGD without clipping at a huge rate: finite for a few steps, then NaN.
DIVERGE = {"optimizer.name": "sgd", "optimizer.learning_rate": 1e3,
           "optimizer.grad_clip": "null"}


def _strict(text: str):
  def reject(constant):
    raise ValueError(f"not JSON: {constant}")
  return json.loads(text, parse_constant=reject)


def assert_strict_json_outputs(output_dir):
  """Every JSON file under output_dir (and each metrics.jsonl row) parses strictly."""
  files = [p for p in output_dir.rglob("*.json") if "checkpoints" not in p.parts]
  assert files
  for path in files:
    _strict(path.read_text())
  rows = [_strict(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
  assert rows
  return rows


def _finite_tree(path) -> bool:
  tree = ocp.StandardCheckpointer().restore(path)
  leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]
  return all(np.all(np.isfinite(x)) for x in leaves if x.dtype.kind == "f")


def in_process(capsys, task, output_dir, settings):
  """``jaxalign train`` through ``main`` in this process: (exit status, stdout, stderr)."""
  code = main(command(task, output_dir, settings)[3:])
  captured = capsys.readouterr()
  return code, captured.out, captured.err


def test_a_diverging_dpo_run_stops_and_keeps_its_last_good_checkpoint(tmp_path, capsys):
  out = tmp_path / "run"
  code, _, err = in_process(capsys, "dpo", out, dict(
      TINY, **DIVERGE, **{"loop.steps": 30, "loop.checkpoint_every": 2}))
  assert code == 3, err[-2000:]
  lines = err.strip().splitlines()
  assert len(lines) == 1, err  # one line, no traceback
  message = lines[0]
  found = re.search(r"non-finite (train/loss|train/grad_norm) \((nan|inf|-inf)\) at step "
                    r"(\d+)", message)
  assert found, message
  step = int(found.group(3))
  assert 2 < step < 30, message  # a few good steps first
  last = latest_checkpoint(str(out))
  assert last == 2 * ((step - 1) // 2), (last, step)  # the last on the cadence before it
  assert f"the last good checkpoint is step {last}" in message
  assert _finite_tree(out / "checkpoints" / str(last) / "state")
  assert not (out / "model").exists() and not (out / "eval.json").exists()
  rows = assert_strict_json_outputs(out)
  bad = [r for r in rows if r["step"] == step]
  assert bad and bad[-1][found.group(1)] is None  # logged, as null
  info = _strict((out / "nan_debug" / "info.json").read_text())
  assert info["step"] == step and info["metric"] == found.group(1)
  with np.load(out / "nan_debug" / "batch.npz") as batch:  # the offending batch's arrays
    assert batch.files and max(batch[k].size for k in batch.files) >= TINY["data.batch_size"]


@pytest.fixture(scope="module")
def random_models(tmp_path_factory):
  """A random one-layer policy and reward model of the synthetic task (no training)."""
  root = tmp_path_factory.mktemp("random_models")
  run = load_config(RunConfig, None, ["model.num_layers=1"])
  config = setup.model_config(run, setup.synthetic_task(run).model_overrides())
  policy = init_params(config, jax.random.PRNGKey(0))
  setup.save_run_model(run, str(root / "sft"), config, policy)
  setup.save_run_model(run, str(root / "rm"), config, reward_model_params(config, policy, 1),
                       kind="reward_model")
  return {"sft": str(root / "sft"), "rm": str(root / "rm")}


def _ppo(random_models, **settings):
  return {"model.init_from": random_models["sft"], "online.reward_model": random_models["rm"],
          "ppo.rollout_batch_size": 16, "ppo.max_new_tokens": 8, "loop.log_every": 1,
          **settings}


@pytest.mark.slow  # online DPO and PPO diverging (DPO's case stays fast): make test-all
def test_diverging_online_dpo_and_ppo_runs_stop_too(tmp_path, capsys, random_models):
  online = dict(TINY, **{"loop.steps": 12, "online.labeller": "gold",
                         "online.refresh_every": 4, "online.samples_per_prompt": 4,
                         "online.max_new_tokens": 8, "online.prompts_per_refresh": 8,
                         "loop.checkpoint_every": 4, "optimizer.learning_rate": 1e30})
  ppo = _ppo(random_models, **{"loop.steps": 8, "loop.checkpoint_every": 1,
                               "optimizer.name": "sgd", "optimizer.learning_rate": 1.0,
                               "optimizer.grad_clip": "null"})
  for task, settings, metric in (("online-dpo", online, "train/"), ("ppo", ppo, "ppo/")):
    out = tmp_path / task
    code, _, err = in_process(capsys, task, out, settings)
    assert code == 3, err[-2000:]
    assert len(err.strip().splitlines()) == 1, err
    assert re.search(rf"^jaxalign: error: non-finite {metric}\w+ \(\S+\) at step \d+", err), \
        err[-500:]
    assert not (out / "model").exists() and (out / "nan_debug" / "info.json").exists()
    assert_strict_json_outputs(out)
    last = latest_checkpoint(str(out))
    if last is not None:
      assert _finite_tree(out / "checkpoints" / str(last) / "state")


STEPS = 60
SIGNAL_RUN = dict(TINY, **{"data.num_train": 256, "loop.steps": STEPS, "loop.log_every": 2,
                           "model.num_layers": 2, "optimizer.learning_rate": 1e-3})


def _rows(path):
  if not path.exists():
    return 0
  return len(path.read_text().splitlines())


def _interrupted_at(status, stderr, code) -> int:
  assert status == code, (status, stderr[-2000:])
  assert "Traceback" not in stderr, stderr[-2000:]
  found = re.search(r"jaxalign: interrupted at step (\d+); rerun to resume", stderr)
  assert found, stderr[-500:]
  return int(found.group(1))


@pytest.mark.slow  # two training subprocesses and a rerun: ~2 min
def test_sigterm_then_rerun_matches_an_uninterrupted_run(tmp_path):
  reference = tmp_path / "uninterrupted"
  subprocess_runs.run(command("dpo", reference, SIGNAL_RUN))
  out = tmp_path / "stopped"
  metrics = out / "metrics.jsonl"
  status, _, stderr = subprocess_runs.signal_when(command("dpo", out, SIGNAL_RUN),
                                                  lambda: _rows(metrics) > 0, signal.SIGTERM)
  step = _interrupted_at(status, stderr, 143)
  assert latest_checkpoint(str(out)) == step < STEPS  # saved at the step it stopped
  assert not (out / "model").exists()
  resumed = subprocess_runs.run(command("dpo", out, SIGNAL_RUN))
  assert f"resuming from step {step}" in resumed.stdout
  _, expected, _ = load_model(str(reference / "model"))
  _, actual, _ = load_model(str(out / "model"))
  for a, b in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(actual)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  # metrics.jsonl: each logged step once, as in the uninterrupted run.
  train = lambda path: [r["step"] for r in map(json.loads, path.read_text().splitlines())
                        if "train/loss" in r]
  assert train(metrics) == train(reference / "metrics.jsonl") == list(range(2, STEPS + 1, 2))


@pytest.mark.slow  # a PPO run in a subprocess, stopped and rerun: make test-all
def test_sigint_stops_ppo_with_a_checkpoint_and_a_rerun_finishes(tmp_path, random_models):
  settings = _ppo(random_models, **{"loop.steps": 40, "loop.checkpoint_every": 0})
  out = tmp_path / "ppo"
  metrics = out / "metrics.jsonl"
  status, _, stderr = subprocess_runs.signal_when(command("ppo", out, settings),
                                                  lambda: _rows(metrics) > 0, signal.SIGINT)
  step = _interrupted_at(status, stderr, 130)
  # loop.checkpoint_every=0 (no periodic checkpoints) still saves on a signal.
  assert latest_checkpoint(str(out)) == step < 40
  resumed = subprocess_runs.run(command("ppo", out, settings))
  assert f"resuming from step {step}" in resumed.stdout
  rows = [json.loads(line) for line in metrics.read_text().splitlines()]
  assert [r["step"] for r in rows] == list(range(1, 41))
