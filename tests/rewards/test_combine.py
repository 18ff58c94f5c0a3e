"""combine: the weighted total and each component's mean / std against numpy; NaN
components; text and ids functions mixed in one combination; the fields a trainer passes."""

import numpy as np
import pytest

from jaxalign import rewards as R
from jaxalign.data import VerifiableTokenizer

EOS = 1


def _constant(values):
  def fn(prompts, completions, **_):
    return np.asarray(values, np.float32)
  return fn


def test_weighted_total_and_metrics_match_numpy():
  rng = np.random.default_rng(0)
  a, b, c = (rng.normal(size=6).astype(np.float32) for _ in range(3))
  reward = R.combine({"a": (0.5, _constant(a)), "b": (-2.0, _constant(b)), "c": _constant(c)})
  out = reward.evaluate(["p"] * 6, ["y"] * 6)
  total = 0.5 * a - 2.0 * b + c
  np.testing.assert_allclose(out.total, total, rtol=1e-6)
  np.testing.assert_allclose(reward(["p"] * 6, ["y"] * 6), total, rtol=1e-6)
  np.testing.assert_array_equal(out.components["b"], b)  # unweighted
  metrics = out.metrics("rollout/rewards/")
  for name, values in {"a": a, "b": b, "c": c, "total": total}.items():
    assert metrics[f"rollout/rewards/{name}/mean"] == pytest.approx(np.mean(values), abs=1e-6)
    assert metrics[f"rollout/rewards/{name}/std"] == pytest.approx(np.std(values), abs=1e-6)
  assert len(metrics) == 8


def test_nan_component_adds_nothing_and_leaves_its_statistics():
  values = np.array([1.0, np.nan, 3.0, np.nan], np.float32)
  reward = R.combine({"sparse": (2.0, _constant(values)), "one": _constant(np.ones(4))})
  out = reward.evaluate(["p"] * 4, ["y"] * 4)
  np.testing.assert_allclose(out.total, [3.0, 1.0, 7.0, 1.0])
  metrics = out.metrics()
  assert metrics["rewards/sparse/mean"] == pytest.approx(2.0)
  assert metrics["rewards/sparse/std"] == pytest.approx(1.0)


def test_combinations_nest():
  inner = R.combine({"x": (3.0, _constant([1.0, 2.0]))})
  outer = R.combine({"inner": (0.5, inner), "y": _constant([10.0, 20.0])})
  np.testing.assert_allclose(outer(["p"] * 2, ["y"] * 2), [11.5, 23.0])


def test_bad_components_are_clear_errors():
  with pytest.raises(ValueError, match="at least one"):
    R.combine({})
  with pytest.raises(ValueError, match="'a/b'"):
    R.combine({"a/b": _constant([1.0])})
  with pytest.raises(ValueError, match="weight, function"):
    R.combine({"a": (1.0, 2.0, _constant([1.0]))})
  with pytest.raises(ValueError, match="finite"):
    R.combine({"a": (float("nan"), _constant([1.0]))})
  wrong_shape = R.combine({"a": _constant([1.0, 2.0, 3.0])})
  with pytest.raises(ValueError, match=r"shape \(3,\), expected \(2,\)"):
    wrong_shape(["p"] * 2, ["y"] * 2)


def test_text_and_ids_functions_in_one_combination_see_the_same_rollout():
  """Given ids and a tokenizer, a text function sees the decoded completions (EOS dropped,
  pad after EOS ignored) and an ids function the ids; both see the same ``truncated``."""
  tokenizer = VerifiableTokenizer()
  completions = np.array([[4, 5, EOS, 0], [6, 6, 6, 6], [EOS, 0, 0, 0]])
  prompts = np.array([[0, 2, 4], [2, 5, 14], [0, 0, 2]])
  prompt_mask = (prompts != 0).astype(np.int32)
  seen = {}

  def text_fn(prompts, completions, *, truncated, **_):
    seen["text"] = (prompts, completions, truncated)
    return np.zeros(len(completions), np.float32)

  @R.ids_reward
  def ids_fn(prompts, completions, *, completion_mask, truncated, **_):
    seen["ids"] = (prompts, completions, completion_mask, truncated)
    return np.asarray(completion_mask.sum(axis=1), np.float32)

  reward = R.combine({"text": text_fn, "ids": ids_fn})
  # No completion_mask given: it is 1 up to and including the first EOS.
  out = reward.evaluate(prompts, completions, prompt_mask=prompt_mask, eos_id=EOS,
                        tokenizer=tokenizer)
  np.testing.assert_array_equal(out.components["ids"], [3, 4, 1])
  text_prompts, text_completions, truncated = seen["text"]
  assert text_completions == ["1 2", "3 3 3 3", ""]
  assert text_prompts == ["<bos> 1", "<bos> 2 =", "<bos>"]
  np.testing.assert_array_equal(truncated, [False, True, False])
  np.testing.assert_array_equal(seen["ids"][3], truncated)
  np.testing.assert_array_equal(seen["ids"][1], completions)


def test_text_function_without_tokenizer_and_ids_function_given_text_are_errors():
  with pytest.raises(ValueError, match="tokenizer"):
    R.call_reward(R.format_reward("x"), np.ones((1, 2), int), np.ones((1, 2), int),
                  completion_mask=np.ones((1, 2)))
  with pytest.raises(ValueError, match="completion_ids"):
    R.call_reward(R.length_penalty(0.1), ["p"], ["y"])


def test_answer_fields_and_rollout_inputs_repeat_prompt_major():
  from jaxalign.data import AnswerPromptRows
  rows = AnswerPromptRows.from_answers([[2, 4, 13, 5, 14], [2, 9, 13, 9, 14]],
                                       [[6], [4, 5]], 0)
  batch = rows.batch([0, 1], 6)
  G = 3
  sample_tokens = np.array([[6, EOS, 0]] * 3 + [[4, 5, EOS]] * 2 + [[4, 5, 5]])
  sample_mask = np.array([[1, 1, 0]] * 3 + [[1, 1, 1]] * 3)

  class Sample:
    tokens, response_mask = sample_tokens, sample_mask

  prompts, completions, fields = R.rollout_inputs(batch, Sample, num_samples=G, eos_id=EOS,
                                                  tokenizer=VerifiableTokenizer())
  np.testing.assert_array_equal(prompts, np.repeat(batch.tokens, G, axis=0))
  np.testing.assert_array_equal(fields["answer_tokens"][:, :2],
                                [[6, 0]] * 3 + [[4, 5]] * 3)
  assert fields["answers"] == ["3"] * 3 + ["1 2"] * 3
  np.testing.assert_array_equal(fields["truncated"], [0, 0, 0, 0, 0, 1])
  assert fields["max_new_tokens"] == 3
  reward = R.verifiable_reward(correct=1.0, format=0.5)
  out = reward.evaluate(prompts, completions, **fields)
  np.testing.assert_array_equal(out.components["correct"], [1, 1, 1, 1, 1, 0])
  np.testing.assert_array_equal(out.components["format"], [1, 1, 1, 1, 1, 0])
  np.testing.assert_allclose(out.total, [1.5] * 5 + [0.0])
  text = R.call_reward(R.exact_match, prompts, completions, **fields)
  np.testing.assert_array_equal(text, out.components["correct"])
  with pytest.raises(ValueError, match="6 completions for 2 prompts x 2"):
    R.rollout_inputs(batch, Sample, num_samples=2, eos_id=EOS)


def test_verifiable_reward_with_overlong():
  reward = R.verifiable_reward(overlong=(4, 2))
  assert set(reward.functions) == {"correct", "overlong"}
  completions = np.array([[6, EOS, 0, 0], [6, 6, 6, EOS]])
  mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1]])
  out = reward.evaluate(np.full((2, 1), 2), completions, completion_mask=mask, eos_id=EOS,
                        answer_tokens=np.array([[6], [6]]), answer_mask=np.ones((2, 1)))
  np.testing.assert_allclose(out.total, [1.0, -1.0])  # 4 tokens: (2 - 4) / 2


def test_with_fields_lets_a_text_function_run_where_only_ids_come():
  """The trainer passes ids and no tokenizer; ``with_fields(fn, tokenizer=...)`` decodes."""
  tokenizer = VerifiableTokenizer()
  counts = R.format_reward(r"\d( \d)*")
  reward = R.combine({"format": R.with_fields(counts, tokenizer=tokenizer),
                      "length": R.length_penalty(1.0)})
  completions = np.array([[4, 5, EOS], [4, 13, EOS], [4, 4, 4]])
  mask = np.array([[1, 1, 1], [1, 1, 1], [1, 1, 1]])
  out = reward.evaluate(np.full((3, 1), 2), completions, completion_mask=mask, eos_id=EOS)
  np.testing.assert_array_equal(out.components["format"], [1, 0, 0])  # "1 2", "1 +", no EOS
  np.testing.assert_allclose(out.total, [-2, -3, -3])
  assert R.with_fields(counts).__name__ == counts.__name__
