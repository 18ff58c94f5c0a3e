"""The rewards of a GRPO / RLOO run, from its config: one ``rewards.combine`` of the
functions the ``rewards.*`` weights turn on.

- ``rewards.correct``: exact match of the gold answer (the verifiable task; ``data.source=
  verifiable``), ``rewards.format``: the answer is well-formed digits;
- ``rewards.gold``: the synthetic task's gold reward (``data.source=synthetic``);
- ``rewards.reward_model``: the score of ``online.reward_model``;
- ``rewards.length_penalty``: ``-coef * length``; ``rewards.overlong_cache``: DAPO's soft
  overlong punishment over the last ``overlong_cache`` tokens of ``max_new_tokens``.

A weight of 0 leaves a function out; ``None`` (the default of ``correct``, ``gold`` and
``reward_model``) means 1 when the run has that source, else out.
"""

from __future__ import annotations

import jax
import numpy as np

from jaxalign import rewards as R
from jaxalign.parallel import shard_batch, to_host
from jaxalign.rewards.verifiable import DIGIT_IDS
from jaxalign.training import setup


def _default(weight, available: bool) -> float:
  return (1.0 if available else 0.0) if weight is None else float(weight)


def _gold_reward(task):
  @R.ids_reward
  def gold(prompts, completions, *, prompt_mask, completion_mask, **_):
    return np.asarray(task.gold_reward(prompts, completions, completion_mask, prompt_mask))
  return gold


def build_reward(run, max_new_tokens: int, mesh=None) -> R.CombinedReward:
  """The run's combined reward function (module docstring); a clear error when none is on."""
  spec, source = run.rewards, run.data.source
  components = {}
  if _default(spec.correct, source == "verifiable"):
    if source != "verifiable":
      raise ValueError("rewards.correct checks gold answers: it needs data.source=verifiable")
    components["correct"] = (_default(spec.correct, True), R.exact_match_ids)
  if spec.format:
    components["format"] = (spec.format, R.token_format(DIGIT_IDS))
  if _default(spec.gold, source == "synthetic"):
    if source != "synthetic":
      raise ValueError("rewards.gold is the synthetic task's gold reward: it needs "
                       "data.source=synthetic")
    components["gold"] = (_default(spec.gold, True), _gold_reward(setup.synthetic_task(run)))
  if _default(spec.reward_model, bool(run.online.reward_model)):
    rm_config, rm_params = setup.load_reward_model(run.online.reward_model)
    components["reward_model"] = (_default(spec.reward_model, True),
                                  R.reward_model_reward(rm_config, rm_params))
  if spec.length_penalty:
    components["length"] = (1.0, R.length_penalty(spec.length_penalty))
  if spec.overlong_cache:
    components["overlong"] = (1.0, R.soft_overlong_punishment(max_new_tokens,
                                                              spec.overlong_cache))
  if not components:
    raise ValueError("no reward function is on: set rewards.correct (data.source=verifiable), "
                     "rewards.gold (synthetic), or online.reward_model")
  return R.combine(components)


def rollout_rewards(reward: R.CombinedReward, prompts, rollout, *, group_size: int,
                    eos_id: int, max_new_tokens: int, mesh=None) -> R.RewardOutput:
  """Rewards of a rollout's ``B * G`` samples, the same on every process: the rollout and
  this process's prompt answers are gathered (``to_host``), then scored on the host."""
  P = rollout.prompt_tokens.shape[1]
  prompt_ids, prompt_mask, completions, completion_mask = to_host(
      (rollout.prompt_tokens, rollout.prompt_mask, rollout.sequence[:, P:],
       rollout.response_mask))
  fields = {"prompt_mask": prompt_mask, "completion_mask": completion_mask,
            "eos_id": int(eos_id), "max_new_tokens": int(max_new_tokens)}
  if getattr(prompts, "answer_tokens", None) is not None:
    answers = (prompts.answer_tokens, prompts.answer_mask)
    if mesh is not None and jax.process_count() > 1:
      answers = to_host(shard_batch(answers, mesh))
    fields["answer_tokens"], fields["answer_mask"] = (np.repeat(np.asarray(a), group_size, 0)
                                                      for a in answers)
  return reward.evaluate(prompt_ids, completions, **fields)
