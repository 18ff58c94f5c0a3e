"""G samples per prompt from one prefill, and the sampler's truncated support recomputed from a
full forward pass (what the online trainers score under top-k / top-p)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.models import Transformer, init_params, tiny_llama
from jaxalign.sampling import generate, truncated_logprobs

CONFIG = tiny_llama(vocab_size=64)


def _prompts():
  tokens = np.array(jax.random.randint(jax.random.key(1), (3, 6), 3, CONFIG.vocab_size))
  mask = np.ones_like(tokens)
  mask[0, :2] = 0  # left padding
  tokens[0, :2] = 0
  return tokens, mask


def _params(scale=3.0):
  params = init_params(CONFIG, jax.random.key(0))
  return jax.tree_util.tree_map(lambda x: scale * x if x.ndim > 1 else x, params)


def test_num_samples_equals_repeating_each_prompt():
  params, (tokens, mask) = _params(), _prompts()
  settings = dict(max_new_tokens=10, temperature=0.9, top_k=12, eos_id=1, pad_id=0,
                  return_sequence=True)
  grouped = generate(CONFIG, params, tokens, mask, jax.random.key(2), num_samples=4,
                     **settings)
  repeated = generate(CONFIG, params, np.repeat(tokens, 4, 0), np.repeat(mask, 4, 0),
                      jax.random.key(2), **settings)
  assert grouped.tokens.shape == (12, 10)
  np.testing.assert_array_equal(grouped.tokens, repeated.tokens)
  np.testing.assert_array_equal(grouped.sequence, repeated.sequence)
  np.testing.assert_array_equal(grouped.kept_counts, repeated.kept_counts)
  for name in ("logprobs", "tempered_logprobs", "sampling_logprobs"):
    np.testing.assert_allclose(getattr(grouped, name), getattr(repeated, name), atol=1e-5)
  # The 4 samples of a prompt differ from each other (independent draws).
  assert len({tuple(row) for row in np.asarray(grouped.tokens[:4])}) > 1


@pytest.mark.parametrize("top_k, top_p, suppress", [(20, 1.0, ()), (0, 0.9, ()),
                                                     (20, 0.9, (0, 2)), (0, 1.0, ())])
def test_truncated_logprobs_of_a_fresh_forward_are_the_samplers(top_k, top_p, suppress):
  params, (tokens, mask) = _params(), _prompts()
  T = 0.8
  out = generate(CONFIG, params, tokens, mask, jax.random.key(3), max_new_tokens=12,
                 temperature=T, top_k=top_k, top_p=top_p, eos_id=1, pad_id=0,
                 return_sequence=True, suppress_tokens=suppress)
  live = np.asarray(out.response_mask) > 0
  kept = np.asarray(out.kept_counts)
  if top_k:
    assert kept[live].max() <= top_k
  if top_k or top_p < 1 or suppress:
    assert kept[live].min() < CONFIG.vocab_size  # the support really is truncated
  else:
    assert (kept[live] == CONFIG.vocab_size).all()
  assert (kept[~live] == 0).all()
  P = tokens.shape[1]
  logits = Transformer(CONFIG).apply({"params": params}, out.sequence,
                                     attention_mask=out.sequence_mask)[:, P - 1:-1]
  recomputed = truncated_logprobs(logits, out.tokens, out.kept_counts, T, suppress)
  np.testing.assert_allclose(np.asarray(recomputed)[live],
                             np.asarray(out.sampling_logprobs)[live], atol=1e-5)
  # Independent check of the support: numpy, float64, from the same logits.
  z = np.asarray(logits, np.float64) / T
  z[..., list(suppress)] = -np.inf
  b, t = np.nonzero(live)
  for i, j in zip(b[:10], t[:10]):
    order = np.sort(z[i, j])[::-1]
    support = z[i, j] >= order[kept[i, j] - 1]
    expected = z[i, j, out.tokens[i, j]] - np.log(np.exp(z[i, j][support]).sum())
    np.testing.assert_allclose(recomputed[i, j], expected, atol=1e-5)


def test_truncated_logprobs_keep_the_token_and_are_differentiable():
  logits = jnp.array([[[3.0, 2.0, 1.0, 0.0]]])
  # The token (id 3) lies outside a support of 2: it is kept, never -inf.
  value = truncated_logprobs(logits, jnp.array([[3]]), jnp.array([[2]]))
  expected = 0.0 - np.log(np.exp(3.0) + np.exp(2.0) + np.exp(0.0))
  np.testing.assert_allclose(value, [[expected]], rtol=1e-6)
  grad = jax.grad(lambda l: truncated_logprobs(l, jnp.array([[0]]), jnp.array([[2]])).sum())(
      logits)
  p = np.exp([3.0, 2.0]) / np.exp([3.0, 2.0]).sum()
  np.testing.assert_allclose(grad[0, 0], [1 - p[0], -p[1], 0.0, 0.0], rtol=1e-5, atol=1e-7)
