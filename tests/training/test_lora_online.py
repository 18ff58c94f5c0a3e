"""LoRA in the online trainers. GRPO with adapters: the update's gradient w.r.t. A and B is the chain rule of the full
model's gradient w.r.t. the merged kernel (an independent check: W_eff = W + s A B), the base
is the reference (KL 0 at step 0, no copy) and stays bit for bit, the sampler reads the
adapters; ``jaxalign train grpo`` with ``model.lora.*`` writes the merged model and adapters.
Online DPO with adapters starts at its reference (the base: loss log 2). (PPO:
tests/training/test_ppo.py, which has the SFT and reward-model fixture.)"""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.config import RunConfig, load_config
from jaxalign.models import init_lora, load_model, merge_lora
from jaxalign.training import setup
from jaxalign.training.grpo import grpo_minibatch_step, make_group_experience
from jaxalign.training.grpo_run import init_grpo_state
from jaxalign.training.rollout import sample_rollout
from jaxalign.training.step import bind_lora
from tests.training import subprocess_runs

PROMPTS, GROUP, RANK, ALPHA = 4, 4, 4, 8.0
SGD = ["optimizer.name=sgd", "optimizer.learning_rate=1.0", "optimizer.grad_clip=none"]


def _run(tmp_path, *overrides):
  return load_config(RunConfig, None, [
      "task=grpo", f"output_dir={tmp_path}", "model.embed_dim=32", "model.num_layers=2",
      f"grpo.prompts_per_iteration={PROMPTS}", f"grpo.group_size={GROUP}",
      "grpo.max_new_tokens=8", "grpo.temperature=1.0", *SGD, *overrides])


def _rollout(run, config, policy):
  rows = setup.build_prompt_rows(run, "train", run.grpo.max_new_tokens)[0]
  prompts = rows.batch(np.arange(PROMPTS), rows.max_length)
  return sample_rollout(config, policy, prompts.tokens, prompts.attention_mask,
                        jax.random.PRNGKey(0), max_new_tokens=run.grpo.max_new_tokens,
                        temperature=1.0, eos_id=config.eos_token_id, num_samples=GROUP)


def _random_b(adapters):
  return jax.tree_util.tree_map_with_path(
      lambda p, x: 0.1 * jax.random.normal(jax.random.PRNGKey(7), x.shape)
      if p[-1].key == "b" else x, adapters)


def _at(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def _projections(adapters, prefix=()):
  for name, node in adapters.items():
    if "a" in node:
      yield (*prefix, name)
    else:
      yield from _projections(node, (*prefix, name))


def test_lora_grpo_gradient_is_the_chain_rule_of_the_merged_model(tmp_path):
  run = _run(tmp_path, f"model.lora.rank={RANK}", f"model.lora.alpha={ALPHA}",
             "grpo.kl_coef=0.05")
  config, base = setup.load_policy(run, setup.vocab_overrides(run))
  state = init_grpo_state(run, config, setup.copy_tree(base))
  assert state.ref_params is None  # the base is the reference: no second copy
  adapters = _random_b(state.params["policy"])
  state = state.replace(params={"policy": adapters})
  merged = merge_lora(config, base, adapters)
  plain = config.replace(lora=None)

  # The sampler reads base + adapters: its log-probs are those of the merged weights.
  rollout = _rollout(run, config, state.policy())
  merged_rollout = _rollout(run, plain, merged)
  np.testing.assert_array_equal(rollout.sequence, merged_rollout.sequence)
  np.testing.assert_allclose(rollout.sampler_logps, merged_rollout.sampler_logps, atol=2e-5)

  rewards = jax.random.normal(jax.random.PRNGKey(3), (PROMPTS * GROUP,))
  bound = bind_lora(state.params, state.base_params, "policy")
  experience, metrics = make_group_experience(config, run.grpo, bound, state.base_params,
                                              rollout, rewards)
  assert abs(float(metrics["rollout/kl"])) > 1e-4  # adapters on: the policy is not the base
  adapters, merged, base = (jax.device_get(t) for t in (adapters, merged, base))  # donated
  lora_next, _ = grpo_minibatch_step(config, run.grpo, state, experience)
  plain_state = init_grpo_state(run, plain, setup.copy_tree(merged))
  plain_next, _ = grpo_minibatch_step(plain, run.grpo, plain_state, experience)

  scale = ALPHA / RANK
  for path in _projections(adapters):
    a, b = (np.asarray(_at(adapters, path)[k], np.float64) for k in ("a", "b"))
    grad_w = (np.asarray(_at(merged, path)["kernel"], np.float64)
              - np.asarray(_at(plain_next.params["policy"], path)["kernel"]))  # SGD lr 1
    new = _at(lora_next.params["policy"], path)
    np.testing.assert_allclose(a - np.asarray(new["a"]), scale * grad_w @ b.T, atol=2e-6)
    np.testing.assert_allclose(b - np.asarray(new["b"]), scale * a.T @ grad_w, atol=2e-6)
  for got, want in zip(jax.tree_util.tree_leaves(lora_next.base_params),
                       jax.tree_util.tree_leaves(base)):
    np.testing.assert_array_equal(got, want)  # the base is frozen


def test_lora_grpo_starts_at_the_reference(tmp_path):
  """Fresh adapters (B = 0): the policy is the base, so the rollout's KL to the reference
  is exactly 0 and the first ratio is 1."""
  run = _run(tmp_path, f"model.lora.rank={RANK}", "grpo.kl_coef=0.1")
  config, base = setup.load_policy(run, setup.vocab_overrides(run))
  state = init_grpo_state(run, config, base)
  rollout = _rollout(run, config, state.policy())
  bound = bind_lora(state.params, state.base_params, "policy")
  _, metrics = make_group_experience(config, run.grpo, bound, state.base_params, rollout,
                                     jnp.arange(PROMPTS * GROUP, dtype=jnp.float32))
  assert float(metrics["rollout/kl"]) == 0.0
  assert init_lora(config, jax.random.PRNGKey(run.seed + 1)).keys() == state.params[
      "policy"].keys()


def test_jaxalign_train_grpo_with_lora_writes_merged_model_and_adapters(tmp_path):
  out = tmp_path / "run"
  sets = ["model.embed_dim=32", "model.num_layers=2", f"grpo.prompts_per_iteration={PROMPTS}",
          f"grpo.group_size={GROUP}", "grpo.max_new_tokens=8", "loop.steps=2",
          "loop.log_every=1", "grpo.kl_coef=0.1", f"model.lora.rank={RANK}",
          "model.lora.targets=q_proj,v_proj,down_proj", "model.lora.alpha=16",
          "optimizer.learning_rate=0.05"]
  result = subprocess.run(
      [sys.executable, "-m", "jaxalign.cli.main", "train", "grpo", "--no-progress",
       "--output-dir", str(out), *[a for s in sets for a in ("--set", s)]],
      env=subprocess_runs.ENV, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  with open(out / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f]
  kls = [row["rollout/kl"] for row in rows if "rollout/kl" in row]
  assert kls[0] == 0.0  # iteration 1 samples the base: KL to the reference is 0

  run = load_config(RunConfig, str(out / "config.yaml"))
  _, start = setup.load_policy(run, setup.vocab_overrides(run))  # the seed's random init
  config, merged, kind = load_model(str(out / "model"))
  _, adapters, adapters_kind = load_model(str(out / "adapters"))
  assert kind == "policy" and config.lora is None and adapters_kind == "lora_adapters"
  assert sorted({p[-2].key for p, _ in jax.tree_util.tree_leaves_with_path(adapters)}) == [
      "down_proj", "q_proj", "v_proj"]
  moved = 0.0
  for path, value in jax.tree_util.tree_leaves_with_path(merged):
    names = [p.key for p in path]
    want = _at(start, names)
    if names[-1] == "kernel" and names[-2] in ("q_proj", "v_proj", "down_proj"):
      node = _at(adapters, names[:-1])
      want = np.asarray(want) + (16.0 / RANK) * (np.asarray(node["a"], np.float64)
                                                      @ np.asarray(node["b"]))
      moved = max(moved, float(np.abs(np.asarray(value) - np.asarray(_at(start, names))).max()))
      np.testing.assert_allclose(value, want, atol=1e-6)
    else:
      np.testing.assert_array_equal(value, want)
  assert moved > 1e-5  # the adapters trained


@pytest.mark.parametrize("task, sets, key", [
    ("grpo", ["model.lora.rank=4", "grpo.kl_coef=0.1", "grpo.ref_ema=0.1"], "grpo.ref_ema"),
    ("online-dpo", ["model.lora.rank=4", "online.labeller=gold",
                    "online.reference=previous_iterate"], "online.reference"),
    ("ppo", ["model.lora.rank=4", "ppo.ref_ema=0.1"], "ppo.ref_ema"),
])
def test_lora_settings_the_online_trainers_refuse(tmp_path, task, sets, key):
  out = tmp_path / "run"
  result = subprocess.run(
      [sys.executable, "-m", "jaxalign.cli.main", "train", task, "--no-progress",
       "--output-dir", str(out), *[a for s in sets for a in ("--set", s)]],
      env=subprocess_runs.ENV, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2, result.stderr
  assert key in result.stderr and result.stderr.count("\n") == 1, result.stderr
  assert not out.exists()


def test_online_dpo_with_lora_starts_at_the_base_reference(tmp_path):
  out = tmp_path / "run"
  sets = ["model.num_layers=1", "online.labeller=gold", "online.prompts_per_refresh=16",
          "online.max_new_tokens=8", "data.batch_size=8", "data.num_eval=16", "loop.steps=2",
          "loop.log_every=1", "loop.checkpoint_every=0", f"model.lora.rank={RANK}",
          "optimizer.learning_rate=0.05", "loss.reference=in_step"]
  result = subprocess.run(
      [sys.executable, "-m", "jaxalign.cli.main", "train", "online-dpo", "--no-progress",
       "--output-dir", str(out), *[a for s in sets for a in ("--set", s)]],
      env=subprocess_runs.ENV, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert "adapter params" in result.stdout
  with open(out / "metrics.jsonl") as f:
    losses = [row["train/loss"] for row in map(json.loads, f) if "train/loss" in row]
  assert losses[0] == pytest.approx(np.log(2), abs=1e-6)  # policy == reference at step 0
  assert abs(losses[1] - np.log(2)) > 1e-5  # the adapters moved
  assert (out / "adapters" / "params.safetensors").exists()
  assert load_model(str(out / "model"))[0].lora is None
