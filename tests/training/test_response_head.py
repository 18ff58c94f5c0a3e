"""The online trainers' LM head runs on the response positions only: log-probs and their
gradients equal log-softmax of the full model's logits (the path tests/models/test_hf_parity.py
checks against transformers), with padded prompts and responses, in float32 and bfloat16."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.models import Transformer, init_params, tiny_gpt2, tiny_llama
from jaxalign.training.rollout import response_logits, response_logps

P, N = 5, 7


def _batch():
  rng = np.random.default_rng(0)
  sequence = rng.integers(3, 250, (3, P + N)).astype(np.int32)
  mask = np.ones_like(sequence)
  mask[0, :2] = 0             # left-padded prompt
  mask[1, P + 4:] = 0         # a response that stopped early
  return jnp.asarray(sequence), jnp.asarray(mask)


def _full_logps(config, params, sequence, mask, temperature):
  logits = Transformer(config).apply({"params": params}, sequence, attention_mask=mask)
  logits = logits[:, P - 1:-1].astype(jnp.float32) / temperature
  picked = jnp.take_along_axis(logits, sequence[:, P:, None], axis=-1)[..., 0]
  return picked - jax.nn.logsumexp(logits, axis=-1)


@pytest.mark.parametrize("family, dtype", [(tiny_gpt2, "float32"), (tiny_llama, "float32"),
                                           (tiny_gpt2, "bfloat16")])
def test_response_only_head_equals_the_full_models_log_softmax(family, dtype):
  config = family(dtype=dtype)
  params = init_params(config, jax.random.PRNGKey(0))
  sequence, mask = _batch()
  temperature = 0.7
  ours = lambda p: response_logps(config, p, sequence, mask, P, temperature)
  full = lambda p: _full_logps(config, p, sequence, mask, temperature)
  tol = 1e-5 if dtype == "float32" else 2e-2
  np.testing.assert_allclose(ours(params), full(params), atol=tol, rtol=tol)
  logits = response_logits(config, params, sequence, mask, P)
  assert logits.shape == (3, N, config.vocab_size) and logits.dtype == jnp.float32
  np.testing.assert_allclose(
      jax.nn.log_softmax(logits / temperature).max(-1),
      jax.nn.log_softmax(Transformer(config).apply({"params": params}, sequence,
                                                   attention_mask=mask)[:, P - 1:-1]
                         / temperature).max(-1), atol=tol, rtol=tol)
  if dtype == "float32":
    weights = jnp.asarray(mask[:, P:], jnp.float32)
    grad = lambda f: jax.grad(lambda p: jnp.sum(f(p) * weights))(params)
    for a, b in zip(jax.tree_util.tree_leaves(grad(ours)), jax.tree_util.tree_leaves(
        grad(full))):
      np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4)
