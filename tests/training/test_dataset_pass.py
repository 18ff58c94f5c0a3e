"""Held-out eval counts every row (independent of eval_batch_size, equal to one batch of all
rows), the reference pass and eval pad each batch to its own bucket without changing a
result, PPO prompts follow the data's length, and unpaired KTO equals pair KTO on split pairs."""

import jax
import numpy as np
import pytest

from jaxalign import data as D
from jaxalign.config import RunConfig, load_config
from jaxalign.models import init_params, tiny_gpt2
from jaxalign.parallel import MeshConfig, make_mesh
from jaxalign.training.kto_unpaired import UnpairedKTOObjective
from jaxalign.training.objectives import (PreferenceObjective, RewardModelObjective,
                                          SFTObjective, as_arrays)
from jaxalign.training.preference_losses import preference_loss
from jaxalign.training.runs import make_evaluator, precompute_reference, reward_model_params

CONFIG = tiny_gpt2(vocab_size=32, embed_dim=32, num_layers=1, num_heads=2, num_kv_heads=2,
                   head_dim=16, mlp_dim=64, eos_token_id=1)
N = 23  # 23 mod 7 = 2 and 23 mod 16 = 7 rows the old evaluator dropped


def _ids(rng, low, high):
  return list(rng.integers(3, 32, rng.integers(low, high))) + [1]


def _pairs(max_length=16, seed=0):
  rng = np.random.default_rng(seed)
  prompts = [list(rng.integers(3, 32, rng.integers(2, 5))) for _ in range(N)]
  return D.PreferenceRows.from_token_lists(
      prompts, [_ids(rng, 1, 8) for _ in range(N)], [_ids(rng, 1, 8) for _ in range(N)],
      pad_id=0, eos_id=1, max_length=max_length, weights=rng.uniform(0.25, 2.0, N),
      scores=rng.normal(size=N))


def _unpaired(pairs):
  """Each pair as two rows: chosen desirable, rejected undesirable (same weight)."""
  return D.UnpairedRows.from_token_lists(
      pairs.prompts + pairs.prompts, pairs.chosen + pairs.rejected,
      [True] * len(pairs) + [False] * len(pairs), pad_id=0, eos_id=1,
      max_length=pairs.max_length, weights=np.concatenate([pairs.weights, pairs.weights]))


def _sft(pairs):
  return D.SFTRows.from_token_lists(pairs.prompts, pairs.chosen, pad_id=0, eos_id=1,
                                    max_length=pairs.max_length)


def _cases():
  policy = init_params(CONFIG, jax.random.key(1))  # KTO's z_0 > 0 with these two
  ref = init_params(CONFIG, jax.random.key(0))
  pairs = _pairs()
  term = lambda name: preference_loss(name).loss_term
  return {
      "sft": (SFTObjective(CONFIG), _sft(pairs), policy, None),
      "rm_margin": (RewardModelObjective(CONFIG, margin_scale=0.5), pairs,
                    reward_model_params(CONFIG, policy, 0), None),
      "dpo": (PreferenceObjective(CONFIG, term("dpo")), pairs, policy, ref),
      "rpo": (PreferenceObjective(CONFIG, term("rpo")), pairs, policy, ref),
      "kto": (PreferenceObjective(CONFIG, term("kto")), pairs, policy, ref),
      "kto_unpaired": (UnpairedKTOObjective(CONFIG), _unpaired(pairs), policy, ref),
  }


def _direct(objective, rows, params, ref):
  """The objective on ONE batch of every row at max_length (no evaluator code involved)."""
  batch = as_arrays(rows.batch(np.arange(len(rows)), rows.max_length))
  loss, metrics = jax.jit(lambda p, r, b: objective.loss(p, r, b, objective.denominators(b)))(
      params, ref, batch)
  return {k: float(v) for k, v in dict(metrics, loss=loss).items()}


@pytest.mark.parametrize("name", ["sft", "rm_margin", "dpo", "rpo", "kto", "kto_unpaired"])
def test_eval_counts_every_row_whatever_the_batch_size(name):
  objective, rows, params, ref = _cases()[name]
  expected = _direct(objective, rows, params, ref)
  if name.startswith("kto"):
    assert expected["kl"] > 0.01  # the set's reference point, not each batch's
  mesh = make_mesh(MeshConfig())
  for batch_size in (7, 16, len(rows)):
    got = make_evaluator(objective, rows, ref, batch_size, mesh)(params)
    assert set(got) == set(expected)
    for key, value in expected.items():
      np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6,
                                 err_msg=f"{name} {key} eval_batch_size={batch_size}")


class _Spy:
  """Rows that record the length of every batch asked of them."""

  def __init__(self, rows):
    self.rows, self.seen, self.max_length = rows, [], rows.max_length

  def __len__(self):
    return len(self.rows)

  def lengths(self):
    return self.rows.lengths()

  def batch(self, indices, length):
    self.seen.append((int(self.rows.lengths()[np.asarray(indices)].max()), length))
    return self.rows.batch(indices, length)


def test_reference_pass_and_eval_pad_to_each_batchs_bucket_with_unchanged_results():
  pairs = _pairs(max_length=64, seed=1)  # rows of at most 14 tokens in a 64-token budget
  objective = PreferenceObjective(CONFIG, preference_loss("dpo").loss_term)
  policy, ref = init_params(CONFIG, jax.random.key(0)), init_params(CONFIG, jax.random.key(1))
  mesh = make_mesh(MeshConfig())
  spy = _Spy(pairs)
  cached = precompute_reference(objective, ref, spy, 8, mesh)
  assert spy.seen and all(length == D.bucket_length(longest, D.default_buckets(64)) < 64
                          for longest, length in spy.seen)
  full = as_arrays(pairs.batch(np.arange(N), 64))
  chosen, rejected, _, _ = objective.sequence_logps(ref, full)
  batch = cached.batch(np.arange(4), 16)
  np.testing.assert_allclose(batch["ref_chosen_logps"], np.asarray(chosen)[:4], rtol=1e-5)
  np.testing.assert_allclose(batch["ref_rejected_logps"], np.asarray(rejected)[:4], rtol=1e-5)
  spy.seen.clear()
  got = make_evaluator(objective, spy, ref, 8, mesh)(policy)
  assert spy.seen and max(length for _, length in spy.seen) == 16
  expected = _direct(objective, pairs, policy, ref)
  for key, value in expected.items():
    np.testing.assert_allclose(got[key], value, rtol=1e-5, atol=1e-6, err_msg=key)


def test_unpaired_kto_on_split_pairs_is_pair_kto():
  pairs = _pairs()
  policy, ref = init_params(CONFIG, jax.random.key(0)), init_params(CONFIG, jax.random.key(1))
  paired = PreferenceObjective(CONFIG, preference_loss("kto", beta=0.3).loss_term)
  unpaired = UnpairedKTOObjective(CONFIG, beta=0.3)

  def loss_and_grad(objective, rows):
    batch = as_arrays(rows.batch(np.arange(len(rows)), rows.max_length))
    fn = lambda p: objective.loss(p, ref, batch, objective.denominators(batch))
    return jax.jit(jax.value_and_grad(fn, has_aux=True))(policy)

  (loss_p, metrics_p), grad_p = loss_and_grad(paired, pairs)
  (loss_u, metrics_u), grad_u = loss_and_grad(unpaired, _unpaired(pairs))
  np.testing.assert_allclose(loss_u, loss_p, rtol=1e-5)
  for key in ("kl", "rewards/chosen", "rewards/rejected", "rewards/margins"):
    np.testing.assert_allclose(metrics_u[key], metrics_p[key], rtol=1e-5, atol=1e-7, err_msg=key)
  for a, b in zip(jax.tree_util.tree_leaves(grad_u), jax.tree_util.tree_leaves(grad_p)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


def test_ppo_prompts_are_padded_to_the_data_not_the_budget():
  from jaxalign.training.ppo_run import prompt_iterator
  rows = D.PromptRows.from_token_lists([[3] * n for n in (3, 5, 9, 4)], pad_id=0,
                                       max_length=200)
  run = load_config(RunConfig, None, ["task=ppo", "ppo.rollout_batch_size=2"])
  prompts = prompt_iterator(run, rows)
  for batch in (next(prompts), next(prompts)):  # one epoch (the iterator never ends)
    longest = int(batch.attention_mask.sum(axis=1).max())
    assert batch.tokens.shape[1] == D.bucket_length(longest, D.default_buckets(200)) == 16


def test_unpaired_kto_micro_batches_add_up_to_the_whole_batch():
  from jaxalign.training.step import accumulate_gradients
  rows = _unpaired(_pairs())
  batch = as_arrays(rows.batch(np.arange(44), 16))
  policy, ref = init_params(CONFIG, jax.random.key(1)), init_params(CONFIG, jax.random.key(0))
  objective = UnpairedKTOObjective(CONFIG, beta=2.0)
  whole = jax.jit(lambda p: accumulate_gradients(objective, p, ref, batch, 1))(policy)
  assert float(whole[1]["kl"]) > 0.01  # z_0 > 0: the whole batch's statistic matters
  split = jax.jit(lambda p: accumulate_gradients(objective, p, ref, batch, 4))(policy)
  np.testing.assert_allclose(split[0], whole[0], rtol=1e-5)
  for key in whole[1]:
    np.testing.assert_allclose(split[1][key], whole[1][key], rtol=1e-5, atol=1e-7, err_msg=key)
  for a, b in zip(jax.tree_util.tree_leaves(split[2]), jax.tree_util.tree_leaves(whole[2])):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)  # float32 summation order
