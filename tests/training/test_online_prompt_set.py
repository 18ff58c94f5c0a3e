"""data.online_prompts / data.num_extra_prompts: an online trainer's synthetic prompt set is
the preference pairs' prompts plus nested, unlabelled prompts of the same distribution."""

import numpy as np
import pytest

from jaxalign import data as D
from jaxalign.config import ConfigError, RunConfig, load_config
from jaxalign.config.validate import validate_run
from jaxalign.data.synthetic_source import NUM_SPECIAL
from jaxalign.training.setup import build_prompt_rows, build_rows

PAIRS = ["data.num_train=48", "data.num_eval=16", "data.label_beta=1.0", "data.task_seed=2"]


def _run(*overrides):
  return load_config(RunConfig, None, list(overrides))


def _prompts(*overrides, split="train"):
  return build_prompt_rows(_run("task=ppo", *PAIRS, *overrides), split, 24)[0].prompts


def _same(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    np.testing.assert_array_equal(x, y)


def test_pairs_prompts_are_the_reward_models_and_extras_are_nested_and_new():
  pairs, _ = build_rows(_run("task=rm", *PAIRS), "train")
  _same(_prompts("data.online_prompts=pairs"), pairs.prompts)
  small = _prompts("data.online_prompts=pairs", "data.num_extra_prompts=96")
  large = _prompts("data.online_prompts=pairs", "data.num_extra_prompts=480")
  assert len(small) == 48 + 96 and len(large) == 48 + 480
  _same(small[:48], pairs.prompts)
  _same(large[:len(small)], small)  # nested: 2x extra prompts are within 10x
  seen = {tuple(p) for p in pairs.prompts}
  assert sum(tuple(p) in seen for p in large[48:]) <= 2  # new prompts (a rare repeat at most)
  # the default ("fresh", no extras) is unchanged: the task's own prompt rows
  task = D.SyntheticTask(D.SyntheticTaskConfig(seed=2))
  _same(_prompts(), task.prompt_rows(48, 5).prompts)
  _same(_prompts("data.num_extra_prompts=20")[:48], task.prompt_rows(48, 5).prompts)
  # the eval split stays the held-out prompts
  _same(_prompts("data.online_prompts=pairs", "data.num_extra_prompts=96", split="eval"),
        task.prompt_rows(16, 6).prompts)


def test_extra_prompts_follow_the_prompt_distribution_and_its_shift():
  task = D.SyntheticTask(D.SyntheticTaskConfig(seed=2))
  lengths = lambda ps: np.mean([len(p) for p in ps])
  upper = lambda ps: np.mean([(p[1:] >= NUM_SPECIAL + 30).mean() for p in ps])
  plain, extra = task.sample_prompts(1024, 5), task.nested_prompts(1024, 7)
  assert all(p[0] == D.BOS_ID for p in extra)
  assert abs(lengths(plain) - lengths(extra)) < 0.4
  assert abs(upper(plain) - upper(extra)) < 0.05
  shifted = _prompts("data.online_prompts=pairs", "data.num_extra_prompts=256",
                     "data.prompt_shift=2.0")
  assert upper(shifted[48:]) > upper(extra) + 0.2  # extras take data.prompt_shift too
  _same(task.nested_prompts(300, 7)[:256], task.nested_prompts(256, 7))


@pytest.mark.parametrize("overrides, message", [
    (["task=ppo", "data.num_extra_prompts=-1"], "data.num_extra_prompts must be >= 0"),
    (["task=rm", "data.online_prompts=pairs"], "online trainer"),
    (["task=dpo", "data.num_extra_prompts=8"], "online trainer"),
    (["task=ppo", "data.source=files", "data.train_file=x.jsonl",
      "data.num_extra_prompts=8"], "data.source=synthetic"),
])
def test_config_errors(overrides, message):
  with pytest.raises(ConfigError, match=message):
    validate_run(_run(*overrides))
