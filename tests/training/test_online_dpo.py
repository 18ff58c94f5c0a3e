"""Online / iterative DPO: refresh_every=inf is the offline trainer exactly; fresh on-policy
pairs raise the gold reward with bounded KL; a resumed run matches an uninterrupted one (also
when the reward model is retrained, its optimizer state persisting in the checkpoint); an EMA
reference in bf16 runs moves by exactly a * (policy - reference)."""

import json

import jax
import numpy as np
import pytest

from jaxalign.config import RunConfig, load_config
from jaxalign.eval import sample_and_score
from jaxalign.models import load_model
from jaxalign.training.runs import run_training
from jaxalign.training.setup import synthetic_task


def _config(sft_and_rm, output_dir, task, *overrides):
  return load_config(RunConfig, None, [
      f"task={task}", f"output_dir={output_dir}", f"model.init_from={sft_and_rm['sft']}",
      "data.batch_size=32", "loop.log_every=5", "optimizer.learning_rate=1e-3",
      "data.num_eval=64", *overrides])


def _params(path):
  return jax.tree_util.tree_leaves(load_model(str(path / "model"))[1])


def test_refresh_every_infinity_is_the_offline_trainer(sft_and_rm, tmp_path):
  offline = run_training(_config(sft_and_rm, tmp_path / "offline", "dpo", "loop.steps=12"),
                         progress=False)
  online = run_training(_config(sft_and_rm, tmp_path / "online", "online-dpo", "loop.steps=12",
                                "online.refresh_every=inf"), progress=False)
  assert online == offline
  for a, b in zip(_params(tmp_path / "offline"), _params(tmp_path / "online")):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("labeller", [
    pytest.param("reward_model", marks=pytest.mark.slow),  # test_online_dpo_modes covers it
    "gold"])
def test_online_dpo_raises_gold_reward_with_bounded_kl(sft_and_rm, tmp_path, labeller):
  run_training(_config(sft_and_rm, tmp_path, "online-dpo", "loop.steps=30",
                       "online.refresh_every=10", f"online.labeller={labeller}",
                       f"online.reward_model={sft_and_rm['rm']}",
                       "online.prompts_per_refresh=96", "online.samples_per_prompt=4",
                       "online.reference=previous_iterate"), progress=False)
  task = synthetic_task(load_config(RunConfig))
  prompts = task.prompt_rows(128, seed=99)
  batch = prompts.batch(np.arange(len(prompts)), prompts.max_length)
  config, sft, _ = load_model(sft_and_rm["sft"])
  _, policy, _ = load_model(str(tmp_path / "model"))
  score = lambda params: sample_and_score(
      config, params, sft, batch.tokens, batch.attention_mask, jax.random.PRNGKey(0),
      max_new_tokens=24, eos_id=config.eos_token_id, gold_reward=task.gold_reward)
  before, after = score(sft), score(policy)
  assert after["gold_reward"] > before["gold_reward"] + 1.0, (before, after)
  assert 0.0 < after["kl"] < 60.0


@pytest.mark.slow  # three online DPO runs with RM refresh: make test-all
def test_online_dpo_resume_matches_an_uninterrupted_run(sft_and_rm, tmp_path):
  common = ["online.refresh_every=5", "online.labeller=gold", "online.prompts_per_refresh=64",
            "loop.checkpoint_every=5", "online.rm_refresh_every=0"]
  run_training(_config(sft_and_rm, tmp_path / "full", "online-dpo", "loop.steps=15", *common),
               progress=False)
  run_training(_config(sft_and_rm, tmp_path / "split", "online-dpo", "loop.steps=10", *common),
               progress=False)
  run_training(_config(sft_and_rm, tmp_path / "split", "online-dpo", "loop.steps=15", *common),
               progress=False)
  for a, b in zip(_params(tmp_path / "full"), _params(tmp_path / "split")):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_checkpoint_cadence_must_align_with_refresh(sft_and_rm, tmp_path):
  with pytest.raises(ValueError, match="multiple of online.refresh_every"):
    run_training(_config(sft_and_rm, tmp_path, "online-dpo", "online.refresh_every=4",
                         "online.labeller=gold", "loop.checkpoint_every=6"), progress=False)


TINY = ["data.batch_size=8", "data.num_eval=16", "data.eval_batch_size=16", "loop.log_every=1",
        "online.refresh_every=2", "online.samples_per_prompt=4", "online.max_new_tokens=8",
        "online.prompts_per_refresh=8", "loop.checkpoint_every=2"]
RM_REFRESH = ["online.labeller=reward_model", "online.rm_refresh_every=1",
              "online.rm_refresh_prompts=12", "online.rm_refresh_steps=2",
              "online.rm_optimizer.learning_rate=3e-4"]


def _checkpoint(output_dir, step: int) -> dict:
  """The raw state tree of checkpoint ``step`` as float64 / int numpy arrays."""
  import orbax.checkpoint as ocp
  tree = ocp.StandardCheckpointer().restore(output_dir / "checkpoints" / str(step) / "state")
  return jax.tree_util.tree_map(np.asarray, tree)


def _history(output_dir):
  with open(output_dir / "metrics.jsonl") as f:
    return [json.loads(line) for line in f]


def _tiny(sft_and_rm, output_dir, steps, *overrides):
  return _config(sft_and_rm, output_dir, "online-dpo", f"loop.steps={steps}",
                 f"online.reward_model={sft_and_rm['rm']}", *TINY, *overrides)


@pytest.fixture(scope="module")
def rm_refresh_runs(sft_and_rm, tmp_path_factory):
  """An online run that retrains its reward model at every refresh (steps 2 and 4), and the
  same run killed at step 4 and resumed."""
  root = tmp_path_factory.mktemp("rm_refresh")
  run_training(_tiny(sft_and_rm, root / "full", 6, *RM_REFRESH), progress=False)
  run_training(_tiny(sft_and_rm, root / "split", 4, *RM_REFRESH), progress=False)
  run_training(_tiny(sft_and_rm, root / "split", 6, *RM_REFRESH), progress=False)
  return root


def test_rm_refresh_trains_the_reward_model_with_a_persistent_optimizer(sft_and_rm,
                                                                        rm_refresh_runs):
  full = rm_refresh_runs / "full"
  _, rm0, _ = load_model(sft_and_rm["rm"])
  rm0 = [np.asarray(x) for x in jax.tree_util.tree_leaves(rm0)]
  before, once, twice = (_checkpoint(full, s)["extras"] for s in (2, 4, 6))
  counts = lambda extras: sorted({int(x) for x in jax.tree_util.tree_leaves(
      extras["rm_opt_state"]) if x.dtype.kind == "i" and x.ndim == 0})
  assert counts(before) == [0] and counts(once) == [2] and counts(twice) == [4]  # never reset
  for x, y in zip(rm0, jax.tree_util.tree_leaves(before["rm_params"])):
    np.testing.assert_array_equal(x, y)
  moved = max(float(np.max(np.abs(x - y)))
              for x, y in zip(rm0, jax.tree_util.tree_leaves(once["rm_params"])))
  assert 3e-4 <= moved <= 2 * 3e-4 * 1.01, moved  # 2 Adam steps at online.rm_optimizer's lr
  refreshes = [h for h in _history(full) if "online/rm_loss" in h]
  assert [h["step"] for h in refreshes] == [2, 4]
  for h in refreshes:
    assert h["online/rm_refresh_pairs"] + h["online/rm_refresh_ties_skipped"] == 12, h
    assert h["online/rm_refresh_pairs"] >= 8 and 0.0 <= h["online/rm_accuracy"] <= 1.0, h
    assert np.isfinite(h["online/rm_loss"]), h


def test_rm_refresh_resume_matches_an_uninterrupted_run(rm_refresh_runs):
  full, split = rm_refresh_runs / "full", rm_refresh_runs / "split"
  for a, b in zip(_params(full), _params(split)):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  a, b = _checkpoint(full, 6)["extras"], _checkpoint(split, 6)["extras"]
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
    np.testing.assert_array_equal(x, y)  # the RM and its optimizer state were restored


def test_ema_reference_in_bf16_moves_by_a_times_the_gap(sft_and_rm, tmp_path):
  a = 0.001
  run_training(_tiny(sft_and_rm, tmp_path, 4, "online.labeller=gold", "online.reference=ema",
                     f"online.reference_ema={a}", "model.param_dtype=bfloat16",
                     "optimizer.learning_rate=1e-3"), progress=False)
  before, after = _checkpoint(tmp_path, 2), _checkpoint(tmp_path, 4)  # the update at step 2
  f64 = lambda tree: np.concatenate([np.asarray(x, np.float64).ravel()
                                     for x in jax.tree_util.tree_leaves(tree)])
  ref, policy, moved = f64(before["ref_params"]), f64(before["params"]), f64(after["ref_params"])
  expected = a * (policy - ref)
  assert np.linalg.norm(expected) > 0
  error = np.linalg.norm((moved - ref) - expected) / np.linalg.norm(expected)
  assert error < 0.01, error
  dtypes = lambda tree: {str(x.dtype) for x in jax.tree_util.tree_leaves(tree)}
  assert dtypes(before["params"]) == {"bfloat16"}
  for state in (before, after):  # float32 from the start: one checkpoint structure
    assert dtypes(state["ref_params"]) == {"float32"}
