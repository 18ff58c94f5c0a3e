"""Packed reward-model pairs (data/pair_packing.py, ``data.packing``, the rm default) give the
loss, metrics and gradients of the padded two-row layout (which tests/models/test_hf_parity.py
checks against transformers), with the prompt shared or not, padding on either side, weighted
pairs and micro-batches; a pair never sees another pair of its row. Packing is the default for
sft and rm and for nothing else."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.data.pair_packing import packed_pairs
from jaxalign.models import RewardModel, tiny_gpt2, tiny_llama
from jaxalign.training.dataset_pass import pad_rows
from jaxalign.training.objectives import RewardModelObjective
from jaxalign.training.step import accumulate_gradients
from tests.training.test_shared_prompt import _close, _device, _loss_and_grads, _pairs


@pytest.fixture(scope="module")
def reward_models():
  configs = {"gpt2": tiny_gpt2(num_layers=1), "llama": tiny_llama(num_layers=1),
             "window": tiny_llama(num_layers=1, sliding_window=6)}
  return {name: (c, RewardModel(c).init(jax.random.PRNGKey(2), jnp.zeros((1, 4), jnp.int32))
                 ["params"]) for name, c in configs.items()}


@pytest.mark.parametrize("family", ["gpt2", "llama", "window"])
@pytest.mark.parametrize("share_prompt", [True, False])
def test_packed_pairs_match_the_two_row_layout(reward_models, family, share_prompt):
  config, params = reward_models[family]
  objective = RewardModelObjective(config, margin_scale=1.0, center_rewards_coefficient=0.1)
  for left in (False, True):
    batch = _pairs(left)
    packed = packed_pairs(batch, share_prompt=share_prompt)
    # Several pairs share a row, and the rows hold fewer slots than the two-row layout.
    assert packed["pair_present"].sum() == len(batch["weights"])
    assert packed["pair_present"].shape[0] < len(batch["weights"])
    assert packed["pair_present"].sum(axis=1).max() > 1
    assert packed["pair_tokens"].size < 2 * batch["chosen_tokens"].size
    _close(_loss_and_grads(objective, params, None, packed),
           _loss_and_grads(objective, params, None, batch))


def test_a_pair_never_sees_the_other_pairs_of_its_row(reward_models):
  config, params = reward_models["llama"]
  batch = _pairs(left=False)
  packed = packed_pairs(batch)
  scores = lambda b: np.stack(RewardModelObjective(config).pair_scores(params, _device(b)))
  before = scores(packed)
  # Change every token of the first pair of a row holding several; the row's other pairs
  # (and every other row) keep their scores.
  row = int(np.argmax(packed["pair_present"].sum(axis=1)))
  assert packed["pair_present"][row].sum() > 1
  first = (packed["pair_segment_ids"][row] >= 1) & (packed["pair_segment_ids"][row] <= 3)
  changed = dict(packed, pair_tokens=packed["pair_tokens"].copy())
  changed["pair_tokens"][row, first] = (packed["pair_tokens"][row, first] + 1) % 200 + 3
  after = scores(changed)
  P = packed["pair_present"].shape[1]
  place = row * P  # the flat place of that first pair
  others = (packed["pair_present"].reshape(-1) > 0) & (np.arange(before.shape[1]) != place)
  assert not np.allclose(before[:, place], after[:, place])
  np.testing.assert_allclose(after[:, others], before[:, others], atol=1e-6)


def test_padding_pairs_are_left_out_and_micro_batches_sum_to_the_batch(reward_models):
  config, params = reward_models["gpt2"]
  objective = RewardModelObjective(config, margin_scale=1.0)
  batch = _pairs(left=False)
  padded = pad_rows(batch, num_real=5)  # an eval batch's last rows: weight 0
  packed = packed_pairs(padded, row_multiple=2)
  assert packed["pair_present"].sum() == 5 and packed["pair_tokens"].shape[0] % 2 == 0
  whole = jax.jit(lambda b: accumulate_gradients(objective, params, None, b, 1))
  split = jax.jit(lambda b: accumulate_gradients(objective, params, None, b, 2))
  expected = whole(_device(padded))
  _close(whole(_device(packed)), expected)
  _close(split(_device(packed)), expected)


@pytest.mark.parametrize("task, packed_key", [("sft", "segment_ids"), ("rm", "pair_present"),
                                              ("dpo", None)])
def test_packing_is_the_default_where_it_is_exact(task, packed_key):
  from jaxalign.config import RunConfig, load_config
  from jaxalign.training.batch_layout import batch_layout
  batch = _pairs(False)
  pairs = len(batch["weights"])
  if task == "sft":
    batch = {"tokens": batch["chosen_tokens"], "attention_mask": batch["chosen_attention_mask"],
             "loss_mask": batch["chosen_loss_mask"]}
  out = batch_layout(load_config(RunConfig, None, [f"task={task}"]))(batch)
  if packed_key is None:  # dpo: the shared-prompt layout, one row per pair
    assert "pair_present" not in out and out["pair_tokens"].shape[0] == pairs
  else:
    assert packed_key in out
    rows = out["tokens" if task == "sft" else "pair_tokens"].shape[0]
    assert rows < pairs  # several examples (pairs) per row
  off = batch_layout(load_config(RunConfig, None, [f"task={task}", "data.packing=false"]))(batch)
  assert "pair_present" not in off and "segment_ids" not in off
