"""Checkpoints: a run killed with SIGKILL and resumed ends bit-identical to an uninterrupted
run of the same seed; a checkpoint restores onto a different mesh shape."""

import sys

import jax
import numpy as np
import pytest

from jaxalign.checkpoint import Checkpointer
from jaxalign.models import init_params, load_model, tiny_gpt2
from jaxalign.parallel import MeshConfig, make_mesh, shard_params
from jaxalign.training.optim import OptimizerConfig, make_optimizer
from jaxalign.training.state import TrainState
from tests.training import subprocess_runs

STEPS = 40


def _command(output_dir):
  return [sys.executable, "-m", "jaxalign.cli.main", "train", "dpo", "--no-progress",
          "--output-dir", str(output_dir), "--set", f"loop.steps={STEPS}",
          "--set", "loop.checkpoint_every=4", "--set", "loop.log_every=4",
          "--set", "data.batch_size=16", "--set", "data.num_train=512",
          "--set", "data.num_eval=64", "--set", "model.num_layers=4",
          "--set", "optimizer.learning_rate=1e-3"]


def test_sigkill_then_resume_is_bit_identical(tmp_path):
  reference = tmp_path / "uninterrupted"
  subprocess_runs.run(_command(reference))
  killed = tmp_path / "killed"
  subprocess_runs.kill_after(_command(killed), killed / "checkpoints" / "8")
  assert not (killed / "model").exists(), "the run finished before it could be killed"
  resumed = subprocess_runs.run(_command(killed))
  assert "resuming from step" in resumed.stdout

  _, expected, _ = load_model(str(reference / "model"))
  _, actual, _ = load_model(str(killed / "model"))
  for a, b in zip(jax.tree_util.tree_leaves(expected), jax.tree_util.tree_leaves(actual)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_restore_onto_another_mesh_shape(tmp_path):
  if jax.device_count() < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
  config, tx = tiny_gpt2(), make_optimizer(OptimizerConfig())
  saved_on = make_mesh(MeshConfig(data=8))
  state = TrainState.create(shard_params(init_params(config, jax.random.key(0)), saved_on),
                            tx, seed=3)
  checkpointer = Checkpointer(str(tmp_path), save_every=1)
  checkpointer.save(1, state, {"epoch": 0, "position": 7})
  checkpointer.wait()
  restore_on = make_mesh(MeshConfig(data=2, fsdp=4))
  like = TrainState.create(shard_params(init_params(config, jax.random.key(1)), restore_on),
                           tx, seed=9)
  restored, data_state = checkpointer.restore(like)
  checkpointer.close()
  assert data_state == {"epoch": 0, "position": 7}
  np.testing.assert_array_equal(restored.rng, state.rng)
  embed = restored.params["embed"]
  assert embed.sharding.mesh.shape["fsdp"] == 4 and "fsdp" in str(embed.sharding.spec)
  for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(restored)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
