"""The sampler against transformers' generate, and its log-probs against a fresh forward."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.models import Transformer, load_pretrained
from jaxalign.sampling import generate
from tests import hf_reference

NEW = 40


def _hf_greedy(path, tokens, mask, eos_id):
  import torch
  model = hf_reference.load_hf(path)
  out = model.generate(input_ids=torch.tensor(tokens), attention_mask=torch.tensor(mask),
                       do_sample=False, max_new_tokens=NEW, min_new_tokens=0,
                       eos_token_id=eos_id, pad_token_id=0)
  return out[:, tokens.shape[1]:].numpy()


# gemma2: per-layer sliding windows (4) shorter than the 50 tokens, soft caps while decoding.
@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma2"])
def test_greedy_equals_transformers_token_for_token(hf_model_dirs, family):
  path = hf_model_dirs[family]
  config, params = load_pretrained(path)
  tokens, mask = hf_reference.padded_batch(3, [10, 6, 3, 8], 10, "left")
  out = generate(config, params, tokens, mask, jax.random.key(0), max_new_tokens=NEW,
                 temperature=0.0)
  np.testing.assert_array_equal(np.asarray(out.tokens), _hf_greedy(path, tokens, mask, None))
  # Now with an EOS that a row emits mid-way: both stop that row and pad after it.
  eos = int(out.tokens[0, 5])
  ours = generate(config, params, tokens, mask, jax.random.key(0), max_new_tokens=NEW,
                  temperature=0.0, eos_id=eos)
  theirs = _hf_greedy(path, tokens, mask, eos)
  width = theirs.shape[1]  # transformers stops once every row is done
  np.testing.assert_array_equal(np.asarray(ours.tokens)[:, :width], theirs)
  assert (np.asarray(ours.tokens)[:, width:] == 0).all()
  first_eos = int(np.argmax(np.asarray(ours.tokens[0]) == eos))
  assert int(ours.lengths[0]) == first_eos + 1
  assert ours.response_mask[0, first_eos] == 1 and ours.response_mask[0, first_eos + 1] == 0


def _fresh_logprobs(config, params, sequence, sequence_mask, P, temperature):
  logits = Transformer(config).apply({"params": params}, sequence,
                                     attention_mask=sequence_mask)  # [B, P+N, V]
  scored = logits[:, P - 1:-1] / temperature  # logits at t-1 score token t
  logps = jax.nn.log_softmax(scored, axis=-1)
  return jnp.take_along_axis(logps, sequence[:, P:, None], axis=-1)[..., 0]


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_logprobs_equal_a_fresh_forward_pass(hf_model_dirs, temperature):
  config, params = load_pretrained(hf_model_dirs["llama"])
  tokens, mask = hf_reference.padded_batch(4, [9, 4, 7], 9, "left")
  probe = generate(config, params, tokens, mask, jax.random.key(1), max_new_tokens=24,
                   temperature=temperature)
  eos = int(probe.tokens[1, 6])  # guarantees EOS mid-sequence for row 1
  out = generate(config, params, tokens, mask, jax.random.key(1), max_new_tokens=24,
                 temperature=temperature, eos_id=eos, return_sequence=True)
  assert int(out.lengths[1]) <= 7 < 24
  live = np.asarray(out.response_mask, bool)
  for field, temp in (("logprobs", 1.0), ("tempered_logprobs", temperature)):
    fresh = _fresh_logprobs(config, params, out.sequence, out.sequence_mask, 9, temp)
    np.testing.assert_allclose(np.asarray(getattr(out, field))[live], np.asarray(fresh)[live],
                               atol=1e-5)
    assert (np.asarray(getattr(out, field))[~live] == 0).all()
  np.testing.assert_allclose(out.sampling_logprobs, out.tempered_logprobs, atol=1e-6)
