"""data.prompt_shift / data.response_shift / data.sft_on_chosen on the synthetic source."""

import numpy as np

from jaxalign import data as D
from jaxalign.config import RunConfig, load_config
from jaxalign.data.synthetic_source import NUM_SPECIAL
from jaxalign.training.setup import build_prompt_rows, build_rows

KNOBS = ["data.num_train=96", "data.num_eval=32", "data.label_beta=1.0",
         "data.response_shift=0.75", "data.prompt_shift=2.0", "data.task_seed=3"]


def _run(*overrides):
  return load_config(RunConfig, None, list(overrides))


def _same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_preference_rows_are_the_tasks_shifted_pairs():
  rows, report = build_rows(_run("task=dpo", *KNOBS), "train")
  task = D.SyntheticTask(D.SyntheticTaskConfig(seed=3))
  expected = task.preference_pairs(96, 11, 1.0, 1.0, prompt_shift=2.0, response_shift=0.75)
  _same(rows.prompts, expected.rows.prompts)
  _same(rows.chosen, expected.rows.chosen)
  _same(rows.rejected, expected.rows.rejected)
  assert report.num_kept == len(rows)
  unshifted, _ = build_rows(_run("task=dpo", "data.num_train=96", "data.task_seed=3"), "train")
  assert not all(np.array_equal(a, b) for a, b in zip(rows.chosen, unshifted.chosen))


def test_sft_on_chosen_trains_on_the_pairs_that_dpo_gets():
  pairs, _ = build_rows(_run("task=dpo", *KNOBS), "eval")
  rows, _ = build_rows(_run("task=sft", "data.sft_on_chosen=true", *KNOBS), "eval")
  assert isinstance(rows, D.SFTRows)
  _same(rows.prompts, pairs.prompts)
  _same(rows.responses, pairs.chosen)
  assert rows.max_length == pairs.max_length and not rows.truncated.any()


def test_sft_rows_and_prompts_take_the_shifts():
  task = D.SyntheticTask(D.SyntheticTaskConfig(seed=3))
  rows, _ = build_rows(_run("task=sft", *KNOBS), "train")
  expected = task.sft_rows(96, 1, prompt_shift=2.0, response_shift=0.75)
  _same(rows.prompts, expected.prompts)
  _same(rows.responses, expected.responses)
  prompts, _ = build_prompt_rows(_run("task=online-dpo", "online.labeller=gold", *KNOBS),
                                 "train", 24)
  _same(prompts.prompts, task.prompt_rows(96, 5, prompt_shift=2.0).prompts)
  upper = lambda ps: np.mean([(p[p >= NUM_SPECIAL] >= NUM_SPECIAL + 30).mean() for p in ps])
  plain = task.prompt_rows(96, 5).prompts
  assert upper(prompts.prompts) > upper(plain) + 0.2  # the shifted region: the upper half
