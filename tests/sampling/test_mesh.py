"""The sampler on an 8-device CPU mesh: batch over data, params sharded (FSDP, or Megatron's
tensor-parallel rules), same tokens."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding, PartitionSpec

from jaxalign.models import init_params, tiny_llama
from jaxalign.parallel import MeshConfig, batch_sharding, make_mesh, shard_params
from jaxalign.sampling import generate


def _fsdp_spec(x, size):
  """Shard each param's largest divisible dim over 'fsdp'; replicate the rest."""
  dims = sorted(range(x.ndim), key=lambda d: -x.shape[d])
  for d in dims:
    if x.shape[d] % size == 0:
      return PartitionSpec(*[("fsdp" if i == d else None) for i in range(x.ndim)])
  return PartitionSpec()


def test_sharded_generate_equals_single_device():
  if jax.device_count() < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
  config = tiny_llama()
  params = init_params(config, jax.random.key(0))
  prompt = jax.random.randint(jax.random.key(1), (8, 6), 3, config.vocab_size)
  mask = jnp.ones_like(prompt).at[::2, :3].set(0)
  kwargs = dict(max_new_tokens=10, temperature=0.8, top_k=30)
  single = generate(config, params, prompt, mask, jax.random.key(2), **kwargs)

  mesh = jax.make_mesh((4, 2), ("data", "fsdp"), axis_types=(AxisType.Auto,) * 2)
  sharded_params = jax.tree_util.tree_map(
      lambda x: jax.device_put(x, NamedSharding(mesh, _fsdp_spec(x, 2))), params)
  batch = NamedSharding(mesh, PartitionSpec(("data", "fsdp")))
  out = generate(config, sharded_params, jax.device_put(prompt, batch),
                 jax.device_put(mask, batch), jax.random.key(2), **kwargs)
  assert len(out.tokens.sharding.device_set) > 1
  np.testing.assert_array_equal(out.tokens, single.tokens)
  np.testing.assert_allclose(out.logprobs, single.logprobs, atol=1e-5)


def test_tensor_parallel_greedy_generate_equals_single_device():
  if jax.device_count() < 8:
    pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
  config = tiny_llama()  # 2 kv heads: k/v columns (32) split 4 ways cut through heads
  params = init_params(config, jax.random.key(0))
  prompt = jax.random.randint(jax.random.key(1), (8, 6), 3, config.vocab_size)
  mask = jnp.ones_like(prompt).at[1::2, :2].set(0)
  kwargs = dict(max_new_tokens=8, temperature=0.0)
  single = generate(config, params, prompt, mask, jax.random.key(2), **kwargs)
  mesh = make_mesh(MeshConfig(data=2, fsdp=1, tensor=4))
  sharded = shard_params(params, mesh)
  assert sharded["layers_0"]["mlp"]["up_proj"]["kernel"].sharding.spec[1] == "tensor"
  assert sharded["lm_head"].sharding.spec[0] == "tensor"
  batch = batch_sharding(mesh, 2)
  out = generate(config, sharded, jax.device_put(prompt, batch), jax.device_put(mask, batch),
                 jax.random.key(2), **kwargs)
  np.testing.assert_array_equal(out.tokens, single.tokens)
  np.testing.assert_allclose(out.logprobs, single.logprobs, atol=1e-5)
