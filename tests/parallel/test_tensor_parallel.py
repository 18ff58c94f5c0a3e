"""Tensor parallelism on 8 CPU devices: the rules put 'tensor' where Megatron-LM does, an
odd shape falls back to replication, tensor=1 is the plain FSDP rule, and one PPO iteration
(rollout, experience, a minibatch update) on data=2 x fsdp=2 x tensor=2 and on tensor=8
equals the one-device iteration to 1e-5. (The DPO step: tests/training/test_step_invariance;
the sampler: tests/sampling/test_mesh.)"""

import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from jaxalign.config import RunConfig, load_config
from jaxalign.models import ScalarHead, init_params, tiny_gpt2, tiny_llama
from jaxalign.parallel import (MeshConfig, make_mesh, param_placer, param_shardings,
                               param_spec, shard_params, tensor_dim)
from jaxalign.training.ppo_run import init_ppo_state, ppo_iteration

needs_8 = pytest.mark.skipif(jax.device_count() < 8,
                             reason="needs XLA_FLAGS=--xla_force_host_platform_device_count=8")

TP_MESHES = [MeshConfig(data=2, fsdp=2, tensor=2), MeshConfig(data=1, fsdp=1, tensor=8)]
_ids = lambda c: f"data{c.data}-fsdp{c.fsdp}-tensor{c.tensor}"


def _specs(params, mesh):
  """{"layers_0/attn/q_proj/kernel": PartitionSpec, ...} of the rules on ``mesh``."""
  return {"/".join(str(k.key) for k in path): s.spec for path, s in
          jax.tree_util.tree_leaves_with_path(param_shardings(params, mesh))}


def _shapes(config):
  return jax.eval_shape(lambda: init_params(config, jax.random.key(0)))


# Megatron's layout on data=2 x fsdp=2 x tensor=2: column-parallel q/k/v, gate/up (outputs,
# and their biases, over tensor), row-parallel o/down (inputs over tensor), vocab-parallel
# embedding and LM head; fsdp on the other dim; norms, row biases and pos_embed replicated
# over tensor.
LLAMA = {"embed": P("tensor", "fsdp"), "lm_head": P("tensor", "fsdp"),
         "final_norm/scale": P(),
         "attn/q_proj/kernel": P("fsdp", "tensor"), "attn/k_proj/kernel": P("fsdp", "tensor"),
         "attn/v_proj/kernel": P("fsdp", "tensor"), "attn/o_proj/kernel": P("tensor", "fsdp"),
         "mlp/gate_proj/kernel": P("fsdp", "tensor"), "mlp/up_proj/kernel": P("fsdp", "tensor"),
         "mlp/down_proj/kernel": P("tensor", "fsdp"),
         "attn_norm/scale": P(), "mlp_norm/scale": P()}
GPT2 = {"embed": P("tensor", "fsdp"), "pos_embed": P("fsdp", None),
        "final_norm/scale": P(), "final_norm/bias": P(),
        "attn/q_proj/kernel": P("fsdp", "tensor"), "attn/q_proj/bias": P("tensor"),
        "attn/k_proj/kernel": P("fsdp", "tensor"), "attn/k_proj/bias": P("tensor"),
        "attn/v_proj/kernel": P("fsdp", "tensor"), "attn/v_proj/bias": P("tensor"),
        "attn/o_proj/kernel": P("tensor", "fsdp"), "attn/o_proj/bias": P(),
        "mlp/up_proj/kernel": P("fsdp", "tensor"), "mlp/up_proj/bias": P("tensor"),
        "mlp/down_proj/kernel": P("tensor", "fsdp"), "mlp/down_proj/bias": P(),
        "attn_norm/scale": P(), "attn_norm/bias": P(), "mlp_norm/scale": P(),
        "mlp_norm/bias": P()}


def _expected(table, num_layers):
  out = {}
  for name, spec in table.items():
    if "/" in name and name.split("/")[0] in ("attn", "mlp", "attn_norm", "mlp_norm"):
      out.update({f"layers_{i}/{name}": spec for i in range(num_layers)})
    else:
      out[name] = spec
  return out


@needs_8
@pytest.mark.parametrize("family, config, table", [("llama", tiny_llama(), LLAMA),
                                                   ("gpt2", tiny_gpt2(), GPT2)])
def test_rules_put_tensor_where_megatron_does(family, config, table):
  mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
  assert _specs(_shapes(config), mesh) == _expected(table, config.num_layers), family


@needs_8
def test_tensor_8_and_heads_of_reward_and_value_models():
  config = tiny_llama()  # k/v: 2 kv heads x 16 = 32 columns, divisible by 8
  shapes = _shapes(config)
  specs = _specs(shapes, make_mesh(MeshConfig(data=1, fsdp=1, tensor=8)))
  assert specs["layers_0/attn/k_proj/kernel"] == P(None, "tensor")
  assert specs["layers_0/attn/o_proj/kernel"] == P("tensor", None)
  assert specs["embed"] == specs["lm_head"] == P("tensor", None)
  assert specs["final_norm/scale"] == P()
  # A reward model's backbone and a PPO critic follow the policy's rules under their
  # prefixes; the scalar heads [D, 1] stay off 'tensor'.
  mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
  head = jax.eval_shape(lambda: ScalarHead().init(jax.random.key(0), jnp.zeros((1, 64))))
  backbone = {k: v for k, v in shapes.items() if k != "lm_head"}
  rm = _specs({"backbone": backbone, "score": head["params"]}, mesh)
  policy = _specs(shapes, mesh)
  assert rm["backbone/layers_1/mlp/down_proj/kernel"] == policy["layers_1/mlp/down_proj/kernel"]
  assert rm["backbone/embed"] == P("tensor", "fsdp")
  assert "tensor" not in str(rm["score/dense/kernel"]) + str(rm["score/dense/bias"])
  ppo = _specs({"policy": shapes, "value": {"head": head["params"]}}, mesh)
  assert ppo["policy/layers_0/attn/q_proj/kernel"] == P("fsdp", "tensor")
  assert ppo["value/head/dense/kernel"] == P()


@needs_8
def test_load_model_places_each_tensor_by_its_path(tmp_path):
  from jaxalign.models import load_model, save_model
  mesh = make_mesh(MeshConfig(data=2, fsdp=2, tensor=2))
  config = tiny_gpt2()
  params = init_params(config, jax.random.key(0))
  save_model(str(tmp_path), config, params)
  _, placed, _ = load_model(str(tmp_path), place=param_placer(mesh))
  assert _specs(placed, mesh) == _expected(GPT2, config.num_layers)
  assert {jax.tree_util.keystr(p): x.sharding.spec for p, x in
          jax.tree_util.tree_leaves_with_path(placed)} == {
              jax.tree_util.keystr(p): x.sharding.spec for p, x in
              jax.tree_util.tree_leaves_with_path(shard_params(params, mesh))}
  for a, b in zip(jax.tree_util.tree_leaves(placed), jax.tree_util.tree_leaves(params)):
    np.testing.assert_array_equal(a, b)


@needs_8
def test_residual_hint_only_on_tensor_parallel_meshes():
  """The (data, fsdp) hint on the residual stream is in the program on a tensor mesh, and
  absent on data / FSDP meshes and outside jit (their programs are unchanged)."""
  from jaxalign.models import Transformer
  config = tiny_gpt2(num_layers=1)
  params = init_params(config, jax.random.key(0))
  tokens = np.ones((8, 4), np.int32)
  forward = jax.jit(lambda p, t: Transformer(config).apply({"params": p}, t))
  for mesh_config, hinted in ((MeshConfig(data=2, fsdp=2, tensor=2), True),
                              (MeshConfig(data=2, fsdp=4), False)):
    mesh = make_mesh(mesh_config)
    text = forward.lower(shard_params(params, mesh), tokens).as_text()
    assert ("sharding_constraint" in text) == hinted, mesh_config
  # (Outside jit it is a no-op: test_sharding's eager forward of loaded tensor-parallel
  # params.)


def test_indivisible_dims_fall_back_and_tensor_1_is_plain_fsdp():
  # kv heads x head_dim = 12 columns over tensor=8: replicated over tensor, fsdp elsewhere.
  assert param_spec((128, 12), 2, path=("k_proj", "kernel"), tensor_size=8) == P("fsdp", None)
  assert param_spec((128, 12), 1, path=("k_proj", "kernel"), tensor_size=8) == P()
  assert param_spec((250, 64), 4, path=("embed",), tensor_size=4) == P(None, "fsdp")  # V=250
  assert param_spec((12,), 1, path=("q_proj", "bias"), tensor_size=8) == P()
  assert param_spec((256, 64), 4, path=("lm_head",), tensor_size=4) == P("tensor", "fsdp")
  # fsdp takes the largest dim tensor did not: here the smaller one, 64.
  assert param_spec((64, 256), 4, path=("up_proj", "kernel"), tensor_size=2) == P("fsdp", "tensor")
  # Row-parallel [F, D]: F over tensor, D over fsdp; F=12 indivisible: fsdp takes the
  # largest divisible dim, as without tensor.
  assert param_spec((256, 64), 8, path=("down_proj", "kernel"), tensor_size=8) == P("tensor", "fsdp")
  assert param_spec((12, 256), 8, path=("down_proj", "kernel"), tensor_size=8) == P(None, "fsdp")
  assert tensor_dim(("layers_0", "attn", "o_proj", "bias"), 1) is None
  assert tensor_dim(("score", "dense", "kernel"), 2) is None
  assert tensor_dim("backbone/embed", 2) == 0
  # tensor=1: every param of both families gets exactly the shape-only FSDP spec.
  for config in (tiny_llama(), tiny_gpt2()):
    for path, x in jax.tree_util.tree_leaves_with_path(_shapes(config)):
      for fsdp in (1, 2, 4, 8):
        assert param_spec(x.shape, fsdp, path=path, tensor_size=1) == param_spec(x.shape, fsdp)


# --- one PPO iteration on tensor-parallel meshes ---------------------------------------

PPO_CONFIG = tiny_llama(num_layers=1)  # GQA, gated MLP, untied LM head; 1 layer: compiles fast


def _ppo_run():
  return load_config(RunConfig, None, [
      "task=ppo", "optimizer.name=sgd", "optimizer.learning_rate=0.5",
      "optimizer.grad_clip=none", "ppo.rollout_batch_size=8", "ppo.max_new_tokens=6",
      "ppo.epochs=1", "ppo.num_minibatches=1", "ppo.temperature=0.9"])


@functools.lru_cache(maxsize=None)
def _host_params():
  """(policy, reward model) params as host arrays, initialised once (each ``init_params``
  compiles anew)."""
  policy = init_params(PPO_CONFIG, jax.random.key(0))
  backbone = {k: v for k, v in init_params(PPO_CONFIG, jax.random.key(5)).items()
              if k != "lm_head"}
  head = ScalarHead().init(jax.random.key(6), jnp.zeros((1, PPO_CONFIG.embed_dim)))["params"]
  return jax.device_get((policy, {"backbone": backbone, "score": head}))


def _prompts():
  rng = np.random.default_rng(0)
  tokens = rng.integers(3, PPO_CONFIG.vocab_size, (8, 5)).astype(np.int32)
  mask = np.ones_like(tokens)
  mask[::2, :2] = 0  # left-padded rows
  return types.SimpleNamespace(tokens=tokens, attention_mask=mask)


def _ppo(mesh=None):
  run = _ppo_run()
  policy, rm = jax.tree_util.tree_map(jnp.array, _host_params())  # fresh device copies
  state = init_ppo_state(run, PPO_CONFIG, policy, mesh)
  if mesh is not None and mesh.shape["tensor"] > 1:
    q = state.params["policy"]["layers_0"]["attn"]["q_proj"]["kernel"]
    assert "tensor" in str(q.sharding.spec) and len(q.sharding.device_set) == 8
  rm = rm if mesh is None else shard_params(rm, mesh)
  state, metrics = ppo_iteration(run, PPO_CONFIG, (PPO_CONFIG, rm), state, _prompts(),
                                 mesh=mesh)
  return jax.device_get(state.params), metrics


@pytest.fixture(scope="module")
def ppo_single():
  return _ppo()


@needs_8
@pytest.mark.parametrize("mesh_config", TP_MESHES, ids=_ids)
def test_one_ppo_iteration_is_the_same_on_tensor_parallel_meshes(ppo_single, mesh_config):
  mesh = make_mesh(mesh_config)
  params, metrics = _ppo(mesh)
  single_params, single_metrics = ppo_single
  assert metrics.keys() == single_metrics.keys()
  for key in metrics:
    np.testing.assert_allclose(metrics[key], single_metrics[key], rtol=1e-5, atol=1e-5,
                               err_msg=key)
  assert metrics["ppo/grad_norm"] > 0
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(params),
                          jax.tree_util.tree_leaves(single_params)):
    np.testing.assert_allclose(a, b, atol=1e-5, err_msg=jax.tree_util.keystr(path))
  moved = [float(np.max(np.abs(a - b))) for a, b in zip(
      jax.tree_util.tree_leaves(single_params["policy"]),
      jax.tree_util.tree_leaves(_host_params()[0]))]
  assert max(moved) > 1e-4  # the update did something worth comparing
