"""Reward functions for the built-in verifiable task (``data.source=verifiable``).

``verifiable_reward(correct=1.0, format=0.0, overlong=None)`` is the combination a GRPO / RLOO
run on the task uses: exact match on ids (``correct``: 1 for the answer then EOS, else 0),
optionally plus a format reward (``format``: 1 when the completion is digits then EOS) and
DAPO's soft overlong punishment (``overlong=(L_max, L_cache)``). Its fields: the batch's
``answer_tokens`` / ``answer_mask`` (``D.AnswerPromptBatch``), ``completion_mask`` and
``eos_id`` (``rewards.rollout_inputs`` gives them all).
"""

from __future__ import annotations

from jaxalign.data.verifiable_task import DIGIT_IDS
from jaxalign.rewards.builtin import exact_match_ids, soft_overlong_punishment, token_format
from jaxalign.rewards.combine import CombinedReward, combine

ANSWER_FORMAT = r"\d( \d)*"  # the answer's text (VerifiableTokenizer.decode, EOS left out)


def verifiable_reward(correct: float = 1.0, format: float = 0.0,  # noqa: A002
                      overlong: tuple[int, int] | None = None) -> CombinedReward:
  """``combine`` of ``correct`` (weight of the exact match), ``format`` (weight of
  :func:`token_format` on digits; left out at 0) and ``overlong`` (``(L_max, L_cache)`` of a
  :func:`soft_overlong_punishment` at weight 1; None: left out)."""
  components = {"correct": (correct, exact_match_ids)}
  if format:
    components["format"] = (format, token_format(DIGIT_IDS))
  if overlong is not None:
    components["overlong"] = (1.0, soft_overlong_punishment(*overlong))
  return combine(components)
