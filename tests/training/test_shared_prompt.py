"""The shared-prompt pair layout (data/pair_layout.py) and packed SFT rows (data/packing.py)
give the losses, metrics, reference log-probs and gradients of the padded two-row layout
(which tests/models/test_hf_parity.py and tests/losses/test_trl_parity.py check against
transformers and TRL), for every loss of the DPO family, with padding on either side."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.data.packing import packed_rows, padding_report
from jaxalign.data.pair_layout import fine_bucket, shared_prompt_pairs
from jaxalign.models import RewardModel, init_params, tiny_gpt2, tiny_llama
from jaxalign.training import preference_losses
from jaxalign.training.objectives import (PreferenceObjective, RewardModelObjective,
                                          SFTObjective, reference_logps_fn)

T = 32


def _row(parts, left: bool):
  """(tokens, attention, loss) [T] of prompt + response, padded left or right."""
  prompt, response = parts
  tokens = np.concatenate([prompt, response]).astype(np.int32)
  loss = np.concatenate([np.zeros(len(prompt)), np.ones(len(response))]).astype(np.int32)
  pad = T - len(tokens)
  at = (pad, 0) if left else (0, pad)
  return (np.pad(tokens, at), np.pad(np.ones_like(tokens), at), np.pad(loss, at))


def _pairs(left: bool, seed: int = 0) -> dict:
  """Pairs sharing their prompt, plus: an empty prompt (a response opens the row: right-padded
  only, as left of it the two-row layout would score it from a pad), responses sharing their
  first tokens, prompts that differ at their last token (another tokenisation), a response of
  one token."""
  rng = np.random.default_rng(seed)
  ids = lambda n: rng.integers(3, 250, n)
  pairs = []
  for p, c, r in ((5, 7, 4), (9, 3, 12), (2, 11, 6), (12, 10, 9)):
    prompt = ids(p)
    pairs.append(((prompt, ids(c)), (prompt, ids(r))))
  common = ids(3)
  empty = ((np.array([], int), ids(6)), (np.array([], int), ids(4)))
  pairs += [] if left else [empty]
  pairs.append(((common, np.concatenate([[7, 8], ids(4)])),
                (common, np.concatenate([[7, 8], ids(5)]))))
  prompt = ids(6)
  pairs.append(((prompt, ids(5)), (np.concatenate([prompt[:-1], [prompt[-1] % 200 + 3]]),
                                   ids(3))))
  pairs.append(((ids(4), ids(1)), (ids(4), ids(8))))
  batch = {}
  for index, side in enumerate(("chosen", "rejected")):
    rows = [_row(pair[index], left) for pair in pairs]
    for name, k in (("tokens", 0), ("attention_mask", 1), ("loss_mask", 2)):
      batch[f"{side}_{name}"] = np.stack([row[k] for row in rows])
  B = len(pairs)
  batch["weights"] = rng.uniform(0.5, 1.5, B).astype(np.float32)
  batch["scores"] = rng.normal(size=B).astype(np.float32)
  return batch


def _device(batch):
  return {k: jnp.asarray(v) for k, v in batch.items()}


def _close(a, b, tol=1e-5):
  for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=tol, rtol=tol)


@pytest.fixture(scope="module")
def models():
  configs = {"gpt2": tiny_gpt2(num_layers=1), "llama": tiny_llama(num_layers=1),
             "window": tiny_llama(num_layers=1, sliding_window=6)}
  return {name: (c, init_params(c, jax.random.PRNGKey(1))) for name, c in configs.items()}


def _loss_and_grads(objective, params, ref_params, batch):
  batch = _device(batch)
  denominators = objective.denominators(batch)
  fn = jax.jit(jax.value_and_grad(
      lambda p: objective.loss(p, ref_params, batch, denominators), has_aux=True))
  return fn(params)


def test_the_layout_holds_each_prompt_once():
  batch = _pairs(left=False)
  shared = shared_prompt_pairs(batch)
  two_rows = batch["chosen_attention_mask"].sum(1) + batch["rejected_attention_mask"].sum(1)
  # The shared prefix: the prompt; none; the prompt, not the common response start; the
  # prompt up to where the tokenisations differ; none (two different prompts).
  prefix = [5, 9, 2, 12, 0, 3, 5, 0]
  np.testing.assert_array_equal(shared["pair_attention_mask"].sum(1), two_rows - prefix)
  # Every response token is one entry, chosen and rejected apart.
  assert (shared["response_side"] == 1).sum() == batch["chosen_loss_mask"].sum()
  assert (shared["response_side"] == 2).sum() == batch["rejected_loss_mask"].sum()
  assert shared["pair_tokens"].shape[1] == fine_bucket(int(shared["pair_attention_mask"]
                                                           .sum(axis=1).max()))


def _quantities_and_grads(objective, params, ref_params, batch):
  """The named arrays every DPO-family loss reads (``PreferenceObjective.quantities``) and the
  gradient of a fixed random combination of them: a loss is a function of these alone."""
  batch = _device(batch)
  denominators = objective.denominators(batch)
  names = ("chosen_logps", "rejected_logps", "ref_chosen_logps", "ref_rejected_logps",
           "chosen_lengths", "rejected_lengths", "nll_loss", "pair_denominator",
           "chosen_loss_mask_denominator")
  weights = np.random.default_rng(5).normal(size=len(names))

  def combination(p):
    q = objective.quantities(p, ref_params, batch, denominators)
    return sum(w * jnp.sum(q[k]) for w, k in zip(weights, names)), {k: q[k] for k in names}
  return jax.jit(jax.value_and_grad(combination, has_aux=True))(params)


@pytest.mark.parametrize("family, left", [("gpt2", False), ("llama", True), ("window", False)])
def test_what_every_dpo_loss_reads_and_its_gradients_match_the_two_row_layout(models, family,
                                                                            left):
  config, params = models[family]
  ref_params = jax.tree_util.tree_map(lambda x: x * 0.9, params)
  batch = _pairs(left)
  shared = shared_prompt_pairs(batch)
  spec = preference_losses.preference_loss("rpo")
  objective = PreferenceObjective(config, spec.loss_term, spec.average_logps, True)
  two_rows = _quantities_and_grads(objective, params, ref_params, batch)
  _close(_quantities_and_grads(objective, params, ref_params, shared), two_rows)
  reference = reference_logps_fn(objective)
  cached = reference(ref_params, _device(shared))
  _close(cached, reference(ref_params, _device(batch)))
  # The cached reference rides along in the batch: the quantities of the in-step reference.
  with_cache = dict(shared, ref_chosen_logps=np.asarray(cached[0]),
                    ref_rejected_logps=np.asarray(cached[1]))
  _close(_quantities_and_grads(objective, params, None, with_cache), two_rows)


def test_every_dpo_family_loss_matches_the_two_row_layout(models):
  """Each loss of the table, value and metrics, on both layouts (one compile per layout)."""
  config, params = models["llama"]
  ref_params = jax.tree_util.tree_map(lambda x: x * 0.9, params)

  @jax.jit
  def every_loss(batch):
    out = {}
    for name in preference_losses.LOSS_NAMES:
      spec = preference_losses.preference_loss(name)
      objective = PreferenceObjective(config, spec.loss_term, spec.average_logps)
      out[name] = objective.loss(params, ref_params, batch, objective.denominators(batch))
    return out
  batch = _pairs(left=False)
  ours, two_rows = every_loss(_device(shared_prompt_pairs(batch))), every_loss(_device(batch))
  assert set(ours) == set(preference_losses.LOSS_NAMES)
  _close(ours, two_rows)


def test_reward_model_scores_and_gradients_match_the_two_row_layout(models):
  config, _ = models["llama"]
  params = RewardModel(config).init(jax.random.PRNGKey(2), jnp.zeros((1, 4), jnp.int32))[
      "params"]
  for left in (False, True):
    batch = _pairs(left)
    objective = RewardModelObjective(config, margin_scale=1.0)
    _close(_loss_and_grads(objective, params, None, shared_prompt_pairs(batch)),
           _loss_and_grads(objective, params, None, batch))


def _sft_batch(left: bool) -> dict:
  pairs = _pairs(left, seed=3)
  return {"tokens": pairs["chosen_tokens"], "attention_mask": pairs["chosen_attention_mask"],
          "loss_mask": pairs["chosen_loss_mask"]}


@pytest.mark.parametrize("family", ["gpt2", "window"])
def test_packed_sft_loss_and_gradients_match_the_padded_rows(models, family):
  config, params = models[family]
  objective = SFTObjective(config)
  for left in (False, True):
    batch = _sft_batch(left)
    padded = _loss_and_grads(objective, params, None, batch)
    for pack in (True, False):
      packed = packed_rows(batch, pack=pack)
      if pack:  # several examples share a row: fewer rows than examples
        assert packed["tokens"].shape[0] < batch["tokens"].shape[0]
        assert packed["segment_ids"].max() > 1
      _close(_loss_and_grads(objective, params, None, packed), padded)


def test_padding_report_counts_the_slots_packing_saves():
  lengths = np.array([10, 20, 30, 40, 60, 4, 4, 64])
  report = padding_report(lengths, batch_size=4, width=64)
  # Batch 1: 10+20+30 fit one row of 64 with 40 in another (2 rows); batch 2: 60+4, 4, 64
  # -> rows {64: 60+4}, {64}, {4}: 3 rows.
  assert report["padded_slots"] == 8 * 64 and report["packed_slots"] == 5 * 64
  assert report["real_tokens"] == lengths.sum()
  assert report["padding_saved"] == pytest.approx(3 / 8)


def test_widths_are_few_and_never_pad_more_than_a_quarter():
  sizes = [fine_bucket(n) for n in range(1, 2049)]
  assert all(n <= b < max(17, 1.25 * n + 1) for n, b in zip(range(1, 2049), sizes))
  assert len(set(sizes)) <= 4 * 7 + 1
