"""Sampler details: exact zeros after EOS, greedy log-probs, top-p ties, multi-host masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from jaxalign.models import Transformer, init_params, tiny_llama
from jaxalign.sampling import generate, sampler, top_p_filter
from tests.sampling.fake_model import fake_model
from tests.sampling.test_sampler import _successor_table


@pytest.mark.parametrize("temperature, early_exit", [(0.0, False), (1.0, True)])
@pytest.mark.parametrize("jit", [True, False])
def test_post_eos_logprobs_are_exact_zeros_when_pad_scores_minus_inf(temperature, early_exit,
                                                                     jit):
  # Pad (0) is suppressed, so after EOS the forced pad has sampling log-prob -inf: a
  # multiply by the live mask gives NaN there (and -0.0 for the finite raw log-probs).
  # Eagerly (jit=False) every op runs alone, so no XLA rewrite of the multiply can hide it.
  config, params = fake_model(_successor_table())
  start = np.array([[2, 3], [5, 6]])
  call = lambda: generate(config, params, start, np.ones_like(start), jax.random.key(0),
                          max_new_tokens=8, temperature=temperature, eos_id=7,
                          suppress_tokens=(0,), early_exit=early_exit)
  if jit:
    out = call()
  else:
    with jax.disable_jit():
      out = call()
  np.testing.assert_array_equal(out.tokens, [[4, 5, 6, 7, 0, 0, 0, 0],
                                             [7, 0, 0, 0, 0, 0, 0, 0]])
  pad = ~np.asarray(out.response_mask, bool)
  for name in ("sampling_logprobs", "logprobs", "tempered_logprobs"):
    values = np.asarray(getattr(out, name))
    assert np.isfinite(values).all(), (name, values)
    assert (values[pad] == 0).all() and not np.signbit(values[pad]).any(), (name, values)
    # Real tokens: log p(successor) = -log(1 + 14 or 15 e^-50) = 0 in f32.
    np.testing.assert_allclose(values[~pad], 0.0, atol=1e-6)


def _log_softmax(x):
  top = x.max(-1, keepdims=True)
  return x - top - np.log(np.exp(x - top).sum(-1, keepdims=True))


@pytest.mark.parametrize("suppress", [(), (0, 5, 17)])
def test_greedy_logprobs_are_the_raw_policy_of_a_fresh_forward_pass(suppress):
  config = tiny_llama()
  params = init_params(config, jax.random.key(0))
  prompt = jax.random.randint(jax.random.key(1), (4, 6), 3, config.vocab_size)
  mask = jnp.ones_like(prompt).at[1, :2].set(0).at[3, :4].set(0)
  # top-k / top-p are passed to show they do not enter greedy's sampling log-probs.
  out = generate(config, params, prompt, mask, jax.random.key(0), max_new_tokens=10,
                 temperature=0.0, top_k=3, top_p=0.5, suppress_tokens=suppress,
                 return_sequence=True)
  logits = Transformer(config).apply({"params": params}, out.sequence,
                                     attention_mask=out.sequence_mask)[:, 5:-1]  # [B, 10, V]
  logits = np.asarray(logits, np.float64)
  allowed = logits.copy()
  allowed[..., list(suppress)] = -np.inf
  tokens = np.asarray(out.tokens)
  at = lambda lp: np.take_along_axis(lp, tokens[..., None], axis=-1)[..., 0]
  raw, renormalised = at(_log_softmax(logits)), at(_log_softmax(allowed))
  np.testing.assert_array_equal(tokens, allowed.argmax(-1))  # greedy, suppression respected
  np.testing.assert_allclose(out.logprobs, raw, atol=1e-5)
  np.testing.assert_array_equal(out.tempered_logprobs, out.logprobs)  # T = 1, not T -> 0
  np.testing.assert_allclose(out.sampling_logprobs, renormalised, atol=1e-5)
  if suppress:  # the renormalisation is visible: log(1 - p(suppressed)) ~ -0.01
    assert (np.abs(renormalised - raw) > 1e-3).all()


def _kept(logits, p):
  out = np.asarray(top_p_filter(jnp.asarray([logits], jnp.float32), p))[0]
  return set(np.nonzero(np.isfinite(out))[0].tolist())


def test_top_p_keeps_every_token_tied_at_the_cutoff():
  # Mass before each token in descending order: 0, 0.4, 0.6, 0.8, so p = 0.5 needs 0.4 and
  # one 0.2; all three 0.2s tie at the cut-off and are kept.
  assert _kept(np.log([0.2, 0.4, 0.2, 0.2]), 0.5) == {0, 1, 2, 3}
  # A token below the tie still goes: 0.35 + one 0.2 reaches 0.5; the tied 0.2s stay, 0.05 not.
  assert _kept(np.log([0.2, 0.05, 0.2, 0.35, 0.2]), 0.5) == {0, 2, 3, 4}
  # Ties at the top: the most likely value is tied four ways, all kept even at a tiny p.
  assert _kept(np.log([0.1, 0.225, 0.225, 0.225, 0.225]), 0.01) == {1, 2, 3, 4}
  # A tie below the cut-off does not matter: p = 0.3 needs only the 0.4.
  assert _kept(np.log([0.2, 0.4, 0.2, 0.2]), 0.3) == {1}


@pytest.mark.parametrize("p, expected", [(0.45, {2}), (0.7, {2, 0}), (0.8, {2, 0, 3}),
                                         (0.95, {2, 0, 3, 1}), (1.0, {2, 0, 3, 1})])
def test_top_p_without_ties_is_the_plain_nucleus(p, expected):
  # probs 0.25, 0.1, 0.5, 0.15: the smallest most-likely set with mass >= p, by hand.
  assert _kept(np.log([0.25, 0.1, 0.5, 0.15]), p) == expected


_MESHES = {"data8": ((8,), ("data",), PartitionSpec("data")),
           "rows_and_columns": ((4, 2), ("data", "model"), PartitionSpec("data", "model"))}


@pytest.mark.parametrize("layout", sorted(_MESHES))
def test_mask_checks_of_an_array_spanning_processes_read_its_shards(monkeypatch, layout):
  if jax.device_count() < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
  shape, axes, spec = _MESHES[layout]
  mesh = jax.make_mesh(shape, axes, axis_types=(AxisType.Auto,) * len(shape))
  place = lambda m: jax.device_put(jnp.asarray(m, jnp.int32), NamedSharding(mesh, spec))
  config, params = fake_model(_successor_table())
  prompt = np.ones((8, 4), np.int32)
  good = np.ones((8, 4), np.int32)
  good[5, :3] = 0  # left-padded; on the 4 x 2 mesh its first column shard is all padding
  right_padded = good.copy()
  right_padded[2, 3] = 0
  right_padded[6, 2] = 0  # on the 4 x 2 mesh the drop is across the column shards
  empty = good.copy()
  empty[7] = 0
  cases = [(right_padded, r"prompt_mask is not left-padded \(padding must come first\) "
                          r"in rows \[2, 6\]"),
           (empty, r"prompt rows \[7\] have no real token")]
  arrays = [place(m) for m in (good, right_padded, empty)]
  assert all(len(a.sharding.device_set) == 8 for a in arrays)
  # Every jax.Array now looks like one spanning several processes: np.asarray of it raises
  # as it does on a multi-host run (the old check), only the addressable shards are readable.
  with monkeypatch.context() as patch:
    patch.setattr(type(arrays[0]), "is_fully_addressable", property(lambda self: False))
    with pytest.raises(RuntimeError, match="non-addressable"):
      np.asarray(arrays[0])
    sampler._check_inputs(config, prompt, arrays[0], 2, 1.0, 0, 1.0)  # accepted
    for array, (mask, message) in zip(arrays[1:], cases):
      with pytest.raises(ValueError, match=f"^{message}$"):
        generate(config, params, prompt, array, jax.random.key(0), max_new_tokens=2)
  for mask, message in cases:  # the same message for a host (numpy) mask
    with pytest.raises(ValueError, match=f"^{message}$"):
      generate(config, params, prompt, mask, jax.random.key(0), max_new_tokens=2)
