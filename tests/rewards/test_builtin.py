"""The built-in reward functions against hand-computed values: exact match on text and ids
(EOS, padding, truncation), the format rewards, the length penalty and DAPO's soft overlong
punishment (Yu et al. 2025, Eq. 13) at its boundaries."""

import numpy as np
import pytest

from jaxalign import rewards as R
from jaxalign.data.verifiable_task import DIGIT_IDS, check_answers

EOS, PAD = 1, 0


def _d(*digits):
  """Digit ids of the verifiable task's language (digit d is id 3 + d)."""
  return [3 + d for d in digits]


def _right_padded(rows, width):
  """(ids [B, width], mask [B, width]) of id lists; pad 0 after each row."""
  ids = np.zeros((len(rows), width), np.int32)
  mask = np.zeros((len(rows), width), np.int32)
  for b, row in enumerate(rows):
    ids[b, :len(row)], mask[b, :len(row)] = row, 1
  return ids, mask


# Gold answer 2 3 2 for every row; each case: (completion ids, correct?).
ANSWER = _d(2, 3, 2)
CASES = [
    (_d(2, 3, 2) + [EOS], True),             # the answer then EOS
    (_d(2, 3, 2), False),                    # truncated: no EOS
    (_d(2, 3) + [EOS], False),               # a prefix of the answer
    (_d(2, 3, 2, 2) + [EOS], False),         # the answer then one more digit
    (_d(2, 3, 3) + [EOS], False),            # one digit wrong
    ([EOS], False),                          # empty
    (_d(9, 2, 3, 2) + [EOS], False),         # the answer, shifted by one
]


def test_exact_match_ids_on_hand_examples():
  completions, mask = _right_padded([c for c, _ in CASES], 8)
  answers, answer_mask = _right_padded([ANSWER] * len(CASES), 4)  # one pad column
  expected = np.array([ok for _, ok in CASES], np.float32)
  got = R.exact_match_ids(None, completions, completion_mask=mask, answer_tokens=answers,
                          answer_mask=answer_mask, eos_id=EOS)
  np.testing.assert_array_equal(got, expected)
  assert got.dtype == np.float32


def test_exact_match_ids_ignores_tokens_past_the_mask():
  """The sampler writes pad after EOS and masks it; garbage under a 0 mask changes nothing,
  and a completion that fills the whole budget with the answer has no EOS (wrong)."""
  ids = np.array([_d(2, 3, 2) + [EOS, 7, 7], _d(2, 3, 2) + [7, 7, 7], _d(2, 3, 2) + [0, 0, 0]])
  mask = np.array([[1, 1, 1, 1, 0, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 0, 0]])
  answers, answer_mask = _right_padded([ANSWER] * 3, 3)  # A = 3: no column for EOS
  got = check_answers(ids, mask, answers, answer_mask, EOS)
  np.testing.assert_array_equal(got, [True, False, False])
  # Without the EOS requirement, an answer cut exactly at its end counts; more tokens do not.
  loose = check_answers(ids, mask, answers, answer_mask, EOS, require_eos=False)
  np.testing.assert_array_equal(loose, [True, True, True])
  longer = np.array([_d(2, 3, 2, 5)])
  assert not check_answers(longer, np.ones((1, 4)), answers[:1], answer_mask[:1], EOS,
                           require_eos=False)[0]


def test_exact_match_ids_with_answers_of_several_lengths():
  completions, mask = _right_padded([_d(5) + [EOS], _d(1, 0) + [EOS], _d(1, 0) + [EOS],
                                     [EOS]], 5)
  answers, answer_mask = _right_padded([_d(5), _d(1, 0), _d(1), []], 4)
  got = R.exact_match_ids(None, completions, completion_mask=mask, answer_tokens=answers,
                          answer_mask=answer_mask, eos_id=EOS)
  np.testing.assert_array_equal(got, [1, 1, 0, 1])  # an empty answer: EOS first is right


def test_exact_match_text_normalises_whitespace_and_requires_eos():
  completions = ["2 3 2", " 2  3 2 ", "232", "2 3 2", "2 3", ""]
  answers = ["2 3 2"] * 5 + [""]
  truncated = [False, False, False, True, False, False]
  got = R.exact_match(None, completions, answers=answers, truncated=truncated)
  np.testing.assert_array_equal(got, [1, 1, 0, 0, 0, 1])
  np.testing.assert_array_equal(R.exact_match(None, completions, answers=answers),
                                [1, 1, 0, 1, 0, 1])  # no truncated field: not checked
  with pytest.raises(ValueError, match="answers"):
    R.exact_match(None, completions, answers=answers[:2])


def test_exact_match_text_and_ids_agree_through_the_tokenizer():
  """The text path (decode, drop EOS, compare) and the ids path give the same rewards."""
  from jaxalign.data import VerifiableTokenizer
  completions, mask = _right_padded([c for c, _ in CASES], 8)
  answers, answer_mask = _right_padded([ANSWER] * len(CASES), 4)
  fields = {"completion_mask": mask, "answer_tokens": answers, "answer_mask": answer_mask,
            "eos_id": EOS, "tokenizer": VerifiableTokenizer(), "answers": ["2 3 2"] * len(CASES)}
  prompts = np.full((len(CASES), 2), 2)
  text = R.call_reward(R.exact_match, prompts, completions, **fields)
  ids = R.call_reward(R.exact_match_ids, prompts, completions, **fields)
  np.testing.assert_array_equal(text, ids)
  np.testing.assert_array_equal(ids, [ok for _, ok in CASES])


def test_format_reward_regex_and_eos():
  fn = R.format_reward(R.ANSWER_FORMAT)
  completions = ["1 2 3", "7", " 4 5 ", "1 + 2", "12", "", "1 2 3"]
  truncated = [False] * 6 + [True]
  np.testing.assert_array_equal(fn(None, completions, truncated=truncated),
                                [1, 1, 1, 0, 0, 0, 0])
  loose = R.format_reward(R.ANSWER_FORMAT, require_eos=False)
  np.testing.assert_array_equal(loose(None, completions, truncated=truncated),
                                [1, 1, 1, 0, 0, 0, 1])


def test_token_format_on_ids():
  fn = R.token_format(DIGIT_IDS)
  rows = [_d(1, 2) + [EOS], _d(1) + [13, EOS], [EOS], _d(4, 4), _d(9) + [EOS] + [13]]
  ids, mask = _right_padded(rows, 5)
  mask[4, 2] = 0  # after EOS: the sampler's mask ends at EOS
  np.testing.assert_array_equal(fn(None, ids, completion_mask=mask, eos_id=EOS),
                                [1, 0, 0, 0, 1])
  loose = R.token_format(DIGIT_IDS, min_tokens=0, require_eos=False)
  np.testing.assert_array_equal(loose(None, ids, completion_mask=mask, eos_id=EOS),
                                [1, 0, 1, 1, 1])


def test_length_penalty():
  lengths = np.array([0, 1, 3, 4, 10])
  mask = (np.arange(12)[None, :] < lengths[:, None]).astype(np.int32)
  ids = np.where(mask, 5, 0)
  got = R.length_penalty(0.1, free_tokens=3)(None, ids, completion_mask=mask)
  np.testing.assert_allclose(got, [0, 0, 0, -0.1, -0.7], atol=1e-7)
  # Ragged id lists without a mask: their lengths.
  ragged = [[5] * n for n in lengths]
  np.testing.assert_allclose(R.length_penalty(0.5)(None, ragged), -0.5 * lengths)
  with pytest.raises(ValueError):
    R.length_penalty(-1.0)


def test_soft_overlong_punishment_is_dapo_eq_13_at_the_boundaries():
  """L_max = 20, L_cache = 4: 0 up to 16 tokens, then (16 - L) / 4 down to -1 at 20, then -1."""
  lengths = np.array([0, 1, 15, 16, 17, 18, 19, 20, 21, 30])
  expected = [0, 0, 0, 0, -0.25, -0.5, -0.75, -1, -1, -1]
  mask = (np.arange(32)[None, :] < lengths[:, None]).astype(np.int32)
  fn = R.soft_overlong_punishment(20, 4)
  np.testing.assert_allclose(fn(None, np.where(mask, 5, 0), completion_mask=mask), expected,
                             atol=1e-7)
  np.testing.assert_allclose(fn(None, [[5] * n for n in lengths]), expected, atol=1e-7)
  # L_cache = L_max: the ramp starts at 0 tokens.
  np.testing.assert_allclose(R.soft_overlong_punishment(4, 4)(None, [[5] * n for n in
                                                                     range(6)]),
                             [0, -0.25, -0.5, -0.75, -1, -1], atol=1e-7)
  for bad in [(20, 0), (20, 21)]:
    with pytest.raises(ValueError, match="cache_length"):
      R.soft_overlong_punishment(*bad)


def test_soft_overlong_punishment_matches_trl():
  trl_rewards = pytest.importorskip("trl.rewards")
  ragged = [[5] * n for n in range(26)]
  ours = R.soft_overlong_punishment(20, 6)(None, ragged)
  theirs = trl_rewards.get_soft_overlong_punishment(20, 6)(ragged)
  np.testing.assert_allclose(ours, theirs, atol=1e-6)
