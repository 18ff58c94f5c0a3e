"""Online / iterative DPO: refresh_every=inf is the offline trainer exactly; fresh on-policy
pairs raise the gold reward with bounded KL; a resumed run matches an uninterrupted one."""

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


@pytest.mark.parametrize("labeller", ["reward_model", "gold"])
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
