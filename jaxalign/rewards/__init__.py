"""Reward functions for RL on language models (docs/rewards.md).

A reward function is ``fn(prompts, completions, **fields) -> float32 [B]`` on decoded text
(lists of str) or, marked with ``ids_reward``, on token ids ([B, P] / [B, T] int arrays, their
masks in ``fields``); ``rewards.base`` lists the fields a trainer passes and
``rollout_inputs(batch, sample, ...)`` builds them from a sampler output.

``combine({name: (weight, fn)})`` is a reward function (the weighted total) whose
``evaluate(...)`` returns ``RewardOutput(total, components)``, and ``.metrics()`` the mean and
std of each component. Built-ins: ``exact_match`` / ``exact_match_ids`` (gold answers),
``format_reward`` (regex) / ``token_format`` (allowed ids), ``length_penalty``,
``soft_overlong_punishment`` (DAPO Eq. 13), ``reward_model_reward`` (a trained reward model),
``verifiable_reward`` (the verifiable task's); ``with_fields(fn, tokenizer=...)`` adds
fields to every call. Policy evaluation on prompts with answers: ``greedy_pass_at_1``,
``pass_at_k``, ``evaluate_pass``.
"""

from jaxalign.rewards.base import (IDS, TEXT, RewardFunction, RewardInputs, answer_fields,
                                   call_reward, completion_lengths, decode_rows, ids_reward,
                                   is_text, reward_inputs, rollout_inputs, truncated_rows,
                                   with_fields)
from jaxalign.rewards.builtin import (exact_match, exact_match_ids, format_reward,
                                      length_penalty, soft_overlong_punishment, token_format)
from jaxalign.rewards.combine import CombinedReward, RewardOutput, combine
from jaxalign.rewards.evaluation import (completion_correct, evaluate_pass, greedy_pass_at_1,
                                         pass_at_k, pass_at_k_estimate)
from jaxalign.rewards.model import reward_model_reward
from jaxalign.rewards.verifiable import ANSWER_FORMAT, verifiable_reward

__all__ = [
    "ANSWER_FORMAT", "CombinedReward", "IDS", "RewardFunction", "RewardInputs", "RewardOutput",
    "TEXT", "answer_fields", "call_reward", "combine", "completion_correct",
    "completion_lengths", "decode_rows", "evaluate_pass", "exact_match", "exact_match_ids",
    "format_reward", "greedy_pass_at_1", "ids_reward", "is_text", "length_penalty",
    "pass_at_k", "pass_at_k_estimate", "reward_inputs", "reward_model_reward",
    "rollout_inputs", "soft_overlong_punishment", "token_format", "truncated_rows",
    "verifiable_reward", "with_fields",
]
