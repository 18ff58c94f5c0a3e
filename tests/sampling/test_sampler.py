"""Sampler behaviour on a fake model with exactly predictable output."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.models import init_params, tiny_gpt2
from jaxalign.sampling import generate, generate_bucketed
from jaxalign.sampling.sampler import _generate
from tests.sampling.fake_model import fake_model

V = 16


def _successor_table():
  """After token t the model is (almost) sure the next token is t + 1 mod V."""
  table = np.zeros((V, V), np.float32)
  table[np.arange(V), (np.arange(V) + 1) % V] = 50.0
  return table


def test_fake_model_output_is_exactly_predictable():
  config, params = fake_model(_successor_table())
  prompt = np.array([[0, 0, 3, 4], [5, 6, 7, 9]])
  mask = np.array([[0, 0, 1, 1], [1, 1, 1, 1]])
  out = generate(config, params, prompt, mask, jax.random.key(0), max_new_tokens=8,
                 temperature=1.0, eos_id=12, pad_id=0)
  np.testing.assert_array_equal(out.tokens, [[5, 6, 7, 8, 9, 10, 11, 12],
                                             [10, 11, 12, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(out.lengths, [8, 3])
  np.testing.assert_array_equal(out.response_mask[1], [1, 1, 1, 0, 0, 0, 0, 0])
  # log p(successor) = -log(1 + 15 e^-50) ~ 0 exactly in f32; padding scores 0.
  np.testing.assert_allclose(out.logprobs, 0.0, atol=1e-6)


def test_same_rng_same_output_and_no_retrace():
  config = tiny_gpt2()
  params = init_params(config, jax.random.key(0))
  prompt = jax.random.randint(jax.random.key(1), (3, 5), 3, config.vocab_size)
  mask = jnp.ones_like(prompt).at[0, :2].set(0)
  call = lambda key: generate(config, params, prompt, mask, key, max_new_tokens=6,
                              temperature=0.9, top_k=20, top_p=0.9)
  first = call(jax.random.key(7))
  compiled = _generate._cache_size()
  second = call(jax.random.key(7))
  other = call(jax.random.key(8))
  assert _generate._cache_size() == compiled  # same shapes: no new trace
  np.testing.assert_array_equal(first.tokens, second.tokens)
  np.testing.assert_array_equal(first.logprobs, second.logprobs)
  assert not np.array_equal(first.tokens, other.tokens)


def test_bucketing_keeps_results_and_compiles_once_per_bucket():
  config, params = fake_model(_successor_table())
  outs = []
  before = _generate._cache_size()
  for length, batch in ((3, 2), (5, 3), (7, 1)):
    prompt = np.tile(np.arange(1, length + 1), (batch, 1))
    out = generate_bucketed(config, params, prompt, np.ones_like(prompt), jax.random.key(0),
                            max_new_tokens=4, temperature=0.0, length_multiple=8,
                            batch_multiple=4)
    assert out.tokens.shape == (batch, 4)
    np.testing.assert_array_equal(out.tokens[0], (np.arange(1, 5) + length) % V)
    outs.append(out)
  assert _generate._cache_size() - before == 1


def test_bf16_params_sample_with_f32_logprobs():
  config = tiny_gpt2(dtype="bfloat16", param_dtype="bfloat16")
  params = jax.tree_util.tree_map(lambda x: x.astype(jnp.bfloat16),
                                  init_params(tiny_gpt2(), jax.random.key(0)))
  prompt = jnp.ones((2, 4), jnp.int32)
  out = generate(config, params, prompt, jnp.ones_like(prompt), jax.random.key(0),
                 max_new_tokens=5)
  assert out.logprobs.dtype == jnp.float32 and np.isfinite(np.asarray(out.logprobs)).all()


@pytest.mark.parametrize("kwargs, message", [
    (dict(max_new_tokens=300), "max_new_tokens=300"),
    (dict(max_new_tokens=4, top_p=0.0), "top_p"),
    (dict(max_new_tokens=4, top_p=1.5), "top_p"),
    (dict(max_new_tokens=4, temperature=-1.0), "temperature"),
    (dict(max_new_tokens=4, top_k=-2), "top_k"),
    (dict(max_new_tokens=0), "max_new_tokens=0"),
])
def test_bad_settings_raise(kwargs, message):
  config, params = fake_model(_successor_table())
  prompt = np.ones((1, 4), np.int32)
  with pytest.raises(ValueError, match=message):
    generate(config, params, prompt, np.ones_like(prompt), jax.random.key(0), **kwargs)


def test_bad_prompts_raise():
  config, params = fake_model(_successor_table(), max_seq_len=16)
  long = np.ones((1, 17), np.int32)
  with pytest.raises(ValueError, match="prompt length 17 exceeds"):
    generate(config, params, long, np.ones_like(long), jax.random.key(0), max_new_tokens=1)
  prompt = np.ones((2, 4), np.int32)
  right_padded = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
  with pytest.raises(ValueError, match=r"not left-padded.*\[1\]"):
    generate(config, params, prompt, right_padded, jax.random.key(0), max_new_tokens=2)
  with pytest.raises(ValueError, match="no real token"):
    generate(config, params, prompt, np.array([[1, 1, 1, 1], [0, 0, 0, 0]]),
             jax.random.key(0), max_new_tokens=2)


def _assert_same_output(a, b):
  """Every field of two SampleOutputs equal, exactly (tokens, masks, all three log-probs)."""
  for name in ("tokens", "logprobs", "tempered_logprobs", "sampling_logprobs",
               "response_mask", "lengths", "sequence", "sequence_mask"):
    np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def _scan_and_loop(config, params, prompt, mask, key, **kwargs):
  """The fixed-length scan (early_exit=False) and the while loop (the default with EOS)."""
  return [generate(config, params, prompt, mask, key, early_exit=flag, return_sequence=True,
                   **kwargs) for flag in (False, True)]


def test_early_exit_equals_the_scan_when_some_rows_run_to_the_budget():
  config = tiny_gpt2()
  params = init_params(config, jax.random.key(0))
  prompt = jax.random.randint(jax.random.key(1), (6, 5), 3, config.vocab_size)
  mask = jnp.ones_like(prompt).at[0, :2].set(0)
  kwargs = dict(max_new_tokens=12, temperature=0.8, top_k=40)
  probe = generate(config, params, prompt, mask, jax.random.key(3), **kwargs)
  eos = int(probe.tokens[0, 2])
  scan, loop = _scan_and_loop(config, params, prompt, mask, jax.random.key(3), eos_id=eos,
                              **kwargs)
  lengths = np.asarray(scan.lengths)
  assert lengths.min() <= 3 and lengths.max() == 12, lengths  # both kinds of row
  assert not np.array_equal(scan.logprobs, scan.tempered_logprobs)
  assert not np.array_equal(scan.tempered_logprobs, scan.sampling_logprobs)
  _assert_same_output(scan, loop)


def test_early_exit_equals_the_scan_when_every_row_stops_early():
  rng = np.random.default_rng(0)
  table = rng.normal(size=(V, V)).astype(np.float32)
  table[:, 9] += 3.0  # EOS (9) is likely after every token
  config, params = fake_model(table)
  prompt = rng.integers(1, V, (8, 3))
  scan, loop = _scan_and_loop(config, params, prompt, np.ones_like(prompt), jax.random.key(5),
                              max_new_tokens=16, temperature=0.8, top_k=6, eos_id=9)
  lengths = np.asarray(scan.lengths)
  assert lengths.max() < 16 and lengths.min() < lengths.max(), lengths  # loop exits early
  assert not np.array_equal(scan.tempered_logprobs, scan.sampling_logprobs)
  _assert_same_output(scan, loop)
  # Deterministic successors: the loop stops after 4 steps with the hand-known tokens.
  fake_config, fake_params = fake_model(_successor_table())
  start = np.array([[2, 3], [5, 6]])
  scan, loop = _scan_and_loop(fake_config, fake_params, start, np.ones_like(start),
                              jax.random.key(0), max_new_tokens=8, eos_id=7)
  _assert_same_output(scan, loop)
  np.testing.assert_array_equal(loop.tokens, [[4, 5, 6, 7, 0, 0, 0, 0],
                                              [7, 0, 0, 0, 0, 0, 0, 0]])


def test_suppressed_tokens_are_never_sampled():
  table = np.zeros((V, V), np.float32)
  table[:, 5] = 10.0  # token 5 is by far the most likely after anything
  config, params = fake_model(table)
  prompt = np.full((64, 1), 3, np.int32)
  out = generate(config, params, prompt, np.ones_like(prompt), jax.random.key(0),
                 max_new_tokens=4, suppress_tokens=(5, 0))
  tokens = np.asarray(out.tokens)
  assert not np.isin(tokens, [0, 5]).any()
  # The policy's own log-prob is unrestricted; the sampling one is renormalised without 5.
  other = np.log(1.0 / (V - 1 + np.exp(10.0)))
  np.testing.assert_allclose(out.logprobs, other, rtol=1e-5)
  np.testing.assert_allclose(out.sampling_logprobs, np.log(1.0 / (V - 2)), rtol=1e-5)
  greedy = generate(config, params, prompt[:2], np.ones_like(prompt[:2]), jax.random.key(0),
                    max_new_tokens=2, temperature=0.0, suppress_tokens=(5,))
  assert not np.isin(np.asarray(greedy.tokens), [5]).any()
  with pytest.raises(ValueError, match="suppress_tokens"):
    generate(config, params, prompt, np.ones_like(prompt), jax.random.key(0),
             max_new_tokens=1, suppress_tokens=(V,))
