"""``scan_layers``: the scanned model (stacked params) against the unrolled one."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.models import Transformer, init_params, tiny_gpt2, tiny_llama
from jaxalign.models.layer_stack import stack_layers, unstack_layers
from jaxalign.sampling.sampler import generate

CONFIGS = {
    "gpt2": tiny_gpt2(num_layers=3),
    "llama": tiny_llama(num_layers=3),
    "gemma": tiny_llama(model_type="gemma3_text", activation="gelu_tanh", tie_embeddings=True,
                        num_layers=3, norm_zero_centred=True, post_norms=True, embed_scale=True,
                        qk_norm=True, sliding_window=4, sliding_layers=(0, 2),
                        local_rope_theta=50.0, rope_theta=1000.0, attn_logit_softcap=2.0,
                        final_logit_softcap=4.0),
}


def _batch():
  rng = np.random.default_rng(0)
  tokens = jnp.asarray(rng.integers(3, 200, (3, 12)), jnp.int32)
  mask = np.ones((3, 12), np.int32)
  mask[1, :5] = 0  # left-padded row
  mask[2, 7:] = 0  # right-padded row
  return tokens, jnp.asarray(mask)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_scan_logits_equal_unrolled(name):
  config = CONFIGS[name]
  params = init_params(config, jax.random.key(0))
  tokens, mask = _batch()
  unrolled = Transformer(config).apply({"params": params}, tokens, attention_mask=mask)
  stacked = stack_layers(params, config.num_layers)
  assert stacked["layers"]["attn"]["q_proj"]["kernel"].shape[0] == config.num_layers
  scanned = Transformer(config.replace(scan_layers=True)).apply(
      {"params": stacked}, tokens, attention_mask=mask)
  real = np.asarray(mask, bool)
  np.testing.assert_allclose(np.asarray(scanned)[real], np.asarray(unrolled)[real], atol=1e-5)


def test_stack_unstack_round_trip_and_init_layout():
  config = CONFIGS["llama"]
  params = init_params(config, jax.random.key(0))
  back = unstack_layers(stack_layers(params, 3), 3)
  assert jax.tree_util.tree_structure(back) == jax.tree_util.tree_structure(params)
  for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(params)):
    np.testing.assert_array_equal(a, b)
  scan_init = init_params(config.replace(scan_layers=True), jax.random.key(0))
  shapes = jax.tree_util.tree_map(jnp.shape, scan_init)
  assert shapes == jax.tree_util.tree_map(jnp.shape, stack_layers(params, 3))
  for a, b in zip(jax.tree_util.tree_leaves(scan_init),
                  jax.tree_util.tree_leaves(stack_layers(params, 3))):
    np.testing.assert_array_equal(a, b)  # one seed, one model, in either layout


@pytest.mark.parametrize("name", ["llama", "gemma"])
def test_greedy_decode_equals_unrolled(name):
  config = CONFIGS[name]
  params = init_params(config, jax.random.key(1))
  prompts = jnp.asarray([[0, 0, 5, 6, 7], [8, 9, 10, 11, 12]], jnp.int32)
  mask = jnp.asarray([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]], jnp.int32)
  kwargs = dict(max_new_tokens=6, temperature=0.0, num_samples=2)
  ours = generate(config, params, prompts, mask, jax.random.key(0), **kwargs)
  scanned = generate(config.replace(scan_layers=True), stack_layers(params, 3), prompts, mask,
                     jax.random.key(0), **kwargs)
  np.testing.assert_array_equal(scanned.tokens, ours.tokens)
  np.testing.assert_allclose(scanned.logprobs, ours.logprobs, atol=1e-5)


def test_remat_scan_gradients_equal_unrolled():
  config = CONFIGS["gemma"]
  params = init_params(config, jax.random.key(2))
  tokens, mask = _batch()

  def loss(cfg):
    return jax.grad(lambda p: jnp.sum(Transformer(cfg).apply(
        {"params": p}, tokens, attention_mask=mask) ** 2) * 1e-3)

  plain = loss(config)(params)
  scanned = loss(config.replace(scan_layers=True, remat=True))(stack_layers(params, 3))
  for a, b in zip(jax.tree_util.tree_leaves(stack_layers(plain, 3)),
                  jax.tree_util.tree_leaves(scanned)):
    np.testing.assert_allclose(b, a, atol=1e-5, rtol=1e-4)


def test_scan_without_layers_is_refused():
  with pytest.raises(ValueError, match="scan_layers needs num_layers >= 1"):
    tiny_llama(num_layers=0, scan_layers=True)


@pytest.mark.parametrize("family", ["llama", "gemma3"])
def test_hf_parity_and_export_on_the_stacked_layout(hf_model_dirs, family, tmp_path):
  from jaxalign.models import load_pretrained, save_pretrained
  from tests import hf_reference
  config, params = load_pretrained(hf_model_dirs[family], scan_layers=True)
  assert config.scan_layers and "layers" in params and "layers_0" not in params
  tokens, mask = hf_reference.padded_batch(1, [20, 13, 7], 20, "left")
  ours = np.asarray(Transformer(config).apply({"params": params}, jnp.asarray(tokens),
                                              attention_mask=jnp.asarray(mask)))
  theirs = hf_reference.hf_logits(hf_reference.load_hf(hf_model_dirs[family]), tokens, mask)
  real = mask.astype(bool)
  np.testing.assert_allclose(ours[real], theirs[real], atol=1e-4, rtol=0)
  save_pretrained(config, params, str(tmp_path))
  exported = hf_reference.hf_logits(hf_reference.load_hf(str(tmp_path)), tokens, mask)
  np.testing.assert_allclose(exported[real], theirs[real], atol=1e-5, rtol=0)


def test_sharding_rules_skip_the_layer_axis():
  from jaxalign.parallel.sharding import param_spec, tensor_dim
  from jax.sharding import PartitionSpec as P
  q = ("layers", "attn", "q_proj", "kernel")
  o = ("backbone", "layers", "attn", "o_proj", "kernel")
  assert tensor_dim(q, 3) == 2 and tensor_dim(o, 3) == 1
  assert tensor_dim(("layers_0", "attn", "o_proj", "kernel"), 2) == 0
  # L = 64 is the largest dim, yet fsdp goes on a weight dim.
  assert param_spec((64, 32, 48), 8, path=q, tensor_size=2) == P(None, "fsdp", "tensor")
  assert param_spec((64, 32, 16), 8, path=o, tensor_size=2) == P(None, "tensor", "fsdp")


@pytest.mark.parametrize("saved_scan", [False, True], ids=["saved-unrolled", "saved-stacked"])
def test_load_model_converts_between_layouts(tmp_path, saved_scan):
  """A folder saved in either layout loads in both (``load_model(scan_layers=...)``), and a
  reward model's ``backbone/`` converts too: layer i of the stack is ``layers_i``."""
  from jaxalign.models import load_model, save_model
  config = CONFIGS["llama"]
  params = init_params(config, jax.random.key(3))
  tree = {"backbone": params, "score": {"kernel": jnp.ones((config.embed_dim, 1))}}
  saved = {"backbone": stack_layers(params, 3), "score": tree["score"]} if saved_scan else tree
  save_model(str(tmp_path / "rm"), config.replace(scan_layers=saved_scan), saved,
             kind="reward_model")
  for want_scan in (False, True, None):
    loaded_config, loaded, kind = load_model(str(tmp_path / "rm"), scan_layers=want_scan)
    layout = saved_scan if want_scan is None else want_scan
    assert kind == "reward_model" and loaded_config.scan_layers == layout
    backbone = loaded["backbone"]
    if layout:
      assert set(backbone) >= {"layers"} and not any(k.startswith("layers_") for k in backbone)
      for i in range(3):
        np.testing.assert_array_equal(backbone["layers"]["mlp"]["up_proj"]["kernel"][i],
                                      params[f"layers_{i}"]["mlp"]["up_proj"]["kernel"])
    else:
      for a, b in zip(jax.tree_util.tree_leaves(backbone), jax.tree_util.tree_leaves(params)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(loaded["score"]["kernel"], tree["score"]["kernel"])
