"""LoRA adapters: the activation path against merged weights (an independent check), zero-init
equals the base, full rank represents any weight delta, the config round-trips."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.models import Transformer, init_params, read_model_meta, save_model, tiny_llama
from jaxalign.models.config import LoraConfig, tiny_gpt2
from jaxalign.models.layer_stack import stack_layers, unstack_layers
from jaxalign.models.lora import init_lora, lora_param_count, merge_lora

_TOKENS = jnp.asarray(np.random.default_rng(0).integers(3, 250, (2, 12)), jnp.int32)
_MASK = jnp.ones((2, 12), jnp.int32).at[1, 9:].set(0)


def _logits(config, variables):
  return jax.jit(lambda v: Transformer(config).apply(v, _TOKENS, attention_mask=_MASK))(
      variables)


def _random_b(adapters, seed=1, scale=0.05):
  """Adapters with B drawn at random (nonzero), so the adapter path matters."""
  leaves, tree = jax.tree_util.tree_flatten_with_path(adapters)
  keys = jax.random.split(jax.random.PRNGKey(seed), len(leaves))
  new = [scale * jax.random.normal(k, x.shape) if path[-1].key == "b" else x
         for k, (path, x) in zip(keys, leaves)]
  return jax.tree_util.tree_unflatten(tree, new)


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_zero_init_adapters_give_the_base_logits(make):
  config = make(lora=LoraConfig(rank=4, alpha=8.0))
  base = init_params(config, jax.random.PRNGKey(0))
  adapters = init_lora(config, jax.random.PRNGKey(1))
  assert all(float(jnp.abs(b).max()) == 0.0 for b in _leaves(adapters, "b"))
  assert all(float(jnp.abs(a).max()) > 0.0 for a in _leaves(adapters, "a"))
  np.testing.assert_array_equal(_logits(config, {"params": base, "lora": adapters}),
                                _logits(config, {"params": base}))


def _leaves(adapters, name):
  return [x for p, x in jax.tree_util.tree_leaves_with_path(adapters) if p[-1].key == name]


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_adapters_equal_the_merged_model(make):
  config = make(lora=LoraConfig(rank=4, alpha=8.0))
  base = init_params(config, jax.random.PRNGKey(0))
  adapters = _random_b(init_lora(config, jax.random.PRNGKey(1)))
  with_adapters = _logits(config, {"params": base, "lora": adapters})
  merged = _logits(config.replace(lora=None), {"params": merge_lora(config, base, adapters)})
  base_logits = _logits(config, {"params": base})
  assert float(jnp.abs(with_adapters - base_logits).max()) > 1e-3  # the adapters matter
  np.testing.assert_allclose(with_adapters, merged, atol=1e-5, rtol=1e-5)


def test_adapters_sit_on_the_targets_only():
  config = tiny_llama(lora=LoraConfig(rank=2, targets=("q_proj", "down_proj")))
  adapters = init_lora(config, jax.random.PRNGKey(0))
  paths = {jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_leaves_with_path(adapters)}
  L, D, F, N, H = config.num_layers, config.embed_dim, config.mlp_dim, config.num_heads, 16
  assert len(paths) == 4 * L
  assert adapters["layers_0"]["attn"]["q_proj"]["a"].shape == (D, 2)
  assert adapters["layers_0"]["attn"]["q_proj"]["b"].shape == (2, N * H)
  assert adapters["layers_1"]["mlp"]["down_proj"]["a"].shape == (F, 2)
  assert lora_param_count(adapters) == L * (D * 2 + 2 * N * H + F * 2 + 2 * D)


def test_full_rank_represents_any_weight_delta():
  """r >= min(in, out): A, B from the SVD of a random delta give the base with W + delta."""
  config = tiny_llama(lora=LoraConfig(rank=64, alpha=32.0))
  base = init_params(config, jax.random.PRNGKey(0))
  adapters = init_lora(config, jax.random.PRNGKey(1))
  rng = np.random.default_rng(3)

  def fit(params, lora):
    if "a" in lora:
      kernel = np.asarray(params["kernel"])
      delta = 0.02 * rng.standard_normal(kernel.shape)
      u, s, vt = np.linalg.svd(delta, full_matrices=False)  # [in, k], [k], [k, out]
      k = s.shape[0]
      a = np.zeros(lora["a"].shape)
      b = np.zeros(lora["b"].shape)
      a[:, :k] = u * s / config.lora.scale
      b[:k] = vt
      return ({"a": jnp.asarray(a, jnp.float32), "b": jnp.asarray(b, jnp.float32)},
              dict(params, kernel=jnp.asarray(kernel + delta, jnp.float32)))
    pairs = {name: fit(params[name], sub) for name, sub in lora.items()}
    return ({n: p[0] for n, p in pairs.items()},
            dict(params, **{n: p[1] for n, p in pairs.items()}))

  fitted, target = fit(base, adapters)
  np.testing.assert_allclose(_logits(config, {"params": base, "lora": fitted}),
                             _logits(config.replace(lora=None), {"params": target}),
                             atol=1e-5, rtol=1e-5)


def test_dropout_only_with_a_dropout_rng():
  config = tiny_llama(lora=LoraConfig(rank=4, dropout=0.5))
  base = init_params(config, jax.random.PRNGKey(0))
  adapters = _random_b(init_lora(config, jax.random.PRNGKey(1)))
  variables = {"params": base, "lora": adapters}
  plain = _logits(config, variables)
  np.testing.assert_array_equal(plain, _logits(config, variables))
  dropped = Transformer(config).apply(variables, _TOKENS, attention_mask=_MASK,
                                      rngs={"dropout": jax.random.PRNGKey(5)})
  assert float(jnp.abs(dropped - plain).max()) > 1e-4


def test_config_with_lora_round_trips_through_a_model_folder(tmp_path):
  config = tiny_llama(lora=LoraConfig(rank=3, alpha=6.0, targets=("v_proj",)))
  save_model(str(tmp_path), config, init_params(config, jax.random.PRNGKey(0)))
  json.load(open(tmp_path / "jaxalign_config.json"))  # plain JSON
  loaded, _, _ = read_model_meta(str(tmp_path))
  assert loaded == config and isinstance(loaded.lora, LoraConfig)
  assert dataclasses.asdict(loaded) == dataclasses.asdict(config)


def test_bad_lora_configs_raise():
  with pytest.raises(ValueError, match="rank"):
    LoraConfig(rank=0)
  with pytest.raises(ValueError, match="not projections"):
    LoraConfig(targets=("embed",))


@pytest.mark.parametrize("make", [tiny_llama, tiny_gpt2])
def test_adapters_under_scan_layers_equal_the_unrolled_model(make):
  """Stacked adapters under ``scan_layers``: the same init for a seed, the same logits as the
  unrolled model with the same adapters (and as the merged weights), dropout rngs per layer."""
  config = make(lora=LoraConfig(rank=4, alpha=8.0))
  scanned = config.replace(scan_layers=True)
  base = init_params(config, jax.random.PRNGKey(0))
  adapters = _random_b(init_lora(config, jax.random.PRNGKey(1)))
  stacked = stack_layers(adapters, config.num_layers)
  scanned_init = init_lora(scanned, jax.random.PRNGKey(1))
  for got, want in zip(jax.tree_util.tree_leaves(scanned_init),
                       jax.tree_util.tree_leaves(stack_layers(
                           init_lora(config, jax.random.PRNGKey(1)), config.num_layers))):
    np.testing.assert_array_equal(got, want)
  stacked_base = stack_layers(base, config.num_layers)
  want = _logits(config, {"params": base, "lora": adapters})
  got = _logits(scanned, {"params": stacked_base, "lora": stacked})
  np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
  merged = merge_lora(scanned, stacked_base, stacked)
  np.testing.assert_allclose(
      _logits(config.replace(lora=None), {"params": unstack_layers(merged, config.num_layers)}),
      want, atol=1e-5, rtol=1e-5)
  # Without the "lora" collection the scanned model is the base (the reference).
  np.testing.assert_allclose(_logits(scanned, {"params": stacked_base}),
                             _logits(config, {"params": base}), atol=1e-5, rtol=1e-5)
