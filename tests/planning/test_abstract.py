"""The planner's abstract state is the run's: same tree, shapes, dtypes and shardings as
the ``TrainState`` that ``run_training`` / ``run_online`` build (captured just before their
loops start), on an 8-device CPU mesh with FSDP."""

import jax
import pytest

from jaxalign.config import RunConfig, load_config
from jaxalign.config.validate import resolve_run
from jaxalign.parallel import make_mesh
from jaxalign.planning import abstract as A
from jaxalign.planning.programs import run_programs
from jaxalign.training import online_loop, runs

TINY = ["model.preset=tiny_gpt2", "data.max_length=64", "data.batch_size=8", "data.num_train=16",
        "data.num_eval=8", "data.eval_batch_size=8", "mesh.data=2", "mesh.fsdp=4",
        "loop.steps=1"]


class _Stop(Exception):
  pass


def _real_state(monkeypatch, run):
  captured = {}

  def capture(state, *args, **kwargs):
    captured["state"] = state
    raise _Stop
  if run.task in ("ppo", "grpo"):
    monkeypatch.setattr(online_loop, "_loop",
                        lambda run, algorithm, config, context, state, *a: capture(state))
    with pytest.raises(_Stop):
      online_loop.run_online(run, _algorithm(run), progress=False)
  else:
    monkeypatch.setattr(runs, "fit", capture)
    with pytest.raises(_Stop):
      runs.run_training(run, progress=False)
  return captured["state"]


def _algorithm(run):
  from jaxalign.training.grpo_run import GRPO
  from jaxalign.training.ppo_run import PPO
  return PPO if run.task == "ppo" else GRPO


def _layout(tree) -> dict:
  """{path: (shape, dtype, shard shape)} of every leaf (the optimizer itself, a static
  field, differs by identity only)."""
  return {jax.tree_util.keystr(path): (tuple(x.shape), str(x.dtype),
                                       tuple(x.sharding.shard_shape(x.shape)))
          for path, x in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("task, extra", [
    ("dpo", []), ("dpo", ["loss.reference=in_step"]), ("dpo", ["model.lora.rank=4"]),
    ("sft", []), ("rm", []), ("grpo", ["grpo.kl_coef=0.05", "grpo.max_new_tokens=8",
                                       "grpo.prompts_per_iteration=8", "grpo.group_size=2"]),
    ("grpo", ["model.lora.rank=4", "grpo.kl_coef=0.05", "grpo.max_new_tokens=8",
              "grpo.prompts_per_iteration=8", "grpo.group_size=2"])])
def test_abstract_state_is_the_runs(tmp_path, monkeypatch, task, extra):
  run = resolve_run(load_config(RunConfig, None, [f"task={task}", *TINY, *extra,
                                                 f"output_dir={tmp_path / 'run'}"]))
  real = _real_state(monkeypatch, run)
  mesh = make_mesh(run.mesh)
  config = A.policy_config(run)
  planned = run_programs(run, config, A.abstract_params(config), mesh).state
  planned, real = _layout(planned), _layout(real)
  assert sorted(planned) == sorted(real)
  assert planned == real
