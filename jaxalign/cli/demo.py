"""``jaxalign demo``: the built-in end-to-end job on the synthetic task (a few CPU minutes).

SFT a tiny reference policy on the synthetic language, train a reward model on gold-labelled
pairs, then from the reference: offline DPO and IPO, online (iterative) DPO labelled by the
reward model, and PPO against the reward model. Evaluate each policy's gold reward and KL to
the reference on held-out prompts, and the explicit (reward model) and implicit
(beta * log pi / pi_ref) reward accuracy on held-out pairs. Prints a table, saves a plot.

Then critic-free RL with a verifiable reward: SFT on the verifiable task (list reversal)
leaves a reference at partial accuracy, and GRPO raises its held-out pass@1 (second table;
``results["verifiable"]``).
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np

from jaxalign.config import load_config, RunConfig
from jaxalign.eval import sample_and_score
from jaxalign.models import load_model
from jaxalign.training.runs import run_training
from jaxalign.training.setup import synthetic_task


@dataclasses.dataclass(frozen=True)
class DemoConfig:
  output_dir: str = "runs/demo"
  sft_steps: int = 300
  rm_steps: int = 200
  dpo_steps: int = 150
  batch_size: int = 32
  num_eval_prompts: int = 256
  seed: int = 0
  losses: tuple = (("dpo", 0.1), ("ipo", 0.1))
  online_dpo_steps: int = 60        # 0 skips the online DPO stage
  ppo_iterations: int = 30          # 0 skips the PPO stage
  verifiable_sft_steps: int = 200
  grpo_iterations: int = 60         # 0 skips the verifiable-task stage


def _stage(demo: DemoConfig, name: str, overrides: list[str]) -> dict:
  run = load_config(RunConfig, None, [f"output_dir={os.path.join(demo.output_dir, name)}",
                                      f"seed={demo.seed}", f"data.batch_size={demo.batch_size}",
                                      "loop.log_every=50"] + overrides)
  # Each stage trains from the one before: always afresh (a kept stage could be stale).
  return run_training(run, progress=False, on_existing="overwrite")


def run_demo(demo: DemoConfig = DemoConfig()) -> dict:
  out = demo.output_dir
  sft_dir = os.path.join(out, "sft", "model")
  print(f"[1/5] SFT of the reference policy ({demo.sft_steps} steps)")
  _stage(demo, "sft", ["task=sft", f"loop.steps={demo.sft_steps}", "data.num_train=4096",
                       "optimizer.learning_rate=3e-3", "optimizer.schedule=cosine",
                       f"optimizer.total_steps={demo.sft_steps}"])
  print(f"[2/5] reward model from the reference ({demo.rm_steps} steps)")
  rm_eval = _stage(demo, "rm", ["task=rm", f"loop.steps={demo.rm_steps}",
                                f"model.init_from={sft_dir}", "optimizer.learning_rate=1e-3"])
  results = {"sft": {"explicit_rm_accuracy": rm_eval["eval/accuracy"]}}
  for loss, beta in demo.losses:
    print(f"[3/5] {loss} (beta {beta}) from the reference ({demo.dpo_steps} steps)")
    evaluation = _stage(demo, loss, ["task=dpo", f"loss.name={loss}", f"loss.beta={beta}",
                                     f"loop.steps={demo.dpo_steps}", f"model.init_from={sft_dir}",
                                     "optimizer.learning_rate=1e-3"])
    results[loss] = {"implicit_accuracy": evaluation["eval/rewards/accuracies"]}
  rm_dir = os.path.join(out, "rm", "model")
  if demo.online_dpo_steps:
    print(f"[3/5] online DPO labelled by the reward model ({demo.online_dpo_steps} steps)")
    evaluation = _stage(demo, "online_dpo", [
        "task=online-dpo", f"loop.steps={demo.online_dpo_steps}", f"model.init_from={sft_dir}",
        "optimizer.learning_rate=1e-3", f"online.reward_model={rm_dir}",
        "online.refresh_every=10", "online.samples_per_prompt=4",
        "online.prompts_per_refresh=128", "online.reference=previous_iterate"])
    results["online_dpo"] = {"implicit_accuracy": evaluation["eval/rewards/accuracies"]}
  if demo.ppo_iterations:
    print(f"[3/5] PPO against the reward model ({demo.ppo_iterations} iterations)")
    from jaxalign.training.ppo_run import run_ppo
    run_ppo(load_config(RunConfig, None, [
        "task=ppo", f"output_dir={os.path.join(out, 'ppo')}", f"seed={demo.seed}",
        f"loop.steps={demo.ppo_iterations}", "loop.log_every=10", f"model.init_from={sft_dir}",
        f"online.reward_model={rm_dir}", "optimizer.learning_rate=1.5e-4",
        "ppo.rollout_batch_size=64"]), progress=False, on_existing="overwrite")
    results["ppo"] = {}
  print("[4/5] sampling held-out prompts from every policy")
  task = synthetic_task(load_config(RunConfig))
  prompts = task.prompt_rows(demo.num_eval_prompts, seed=99)
  batch = prompts.batch(np.arange(len(prompts)), prompts.max_length)
  config, ref_params, _ = load_model(sft_dir)
  rm_config, rm_params, _ = load_model(rm_dir)
  for name in results:
    _, params, _ = load_model(os.path.join(out, name, "model"))
    results[name].update(sample_and_score(
        config, params, ref_params, batch.tokens, batch.attention_mask,
        jax.random.PRNGKey(demo.seed), max_new_tokens=task.config.max_response_length,
        eos_id=config.eos_token_id, gold_reward=task.gold_reward,
        reward_model=(rm_config, rm_params)))
  print(format_table(results))
  with open(os.path.join(out, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  plot_results(results, os.path.join(out, "demo.png"))
  if demo.grpo_iterations:
    results["verifiable"] = run_verifiable(demo)
    with open(os.path.join(out, "results.json"), "w") as f:
      json.dump(results, f, indent=2)
  print(f"wrote {os.path.join(out, 'results.json')} and {os.path.join(out, 'demo.png')}")
  return results


VERIFIABLE = ["data.source=verifiable", "data.verifiable_ops=reverse"]


def run_verifiable(demo: DemoConfig) -> dict:
  """SFT on the verifiable task, then GRPO from it: held-out pass@1 / pass@k of both."""
  from jaxalign.rewards import evaluate_pass
  from jaxalign.training.grpo_run import run_grpo
  from jaxalign.training.setup import build_prompt_rows
  out = demo.output_dir
  print(f"[5/5] verifiable task: SFT ({demo.verifiable_sft_steps} steps), then GRPO "
        f"({demo.grpo_iterations} iterations)")
  _stage(demo, "verifiable_sft", VERIFIABLE + [
      "task=sft", f"loop.steps={demo.verifiable_sft_steps}", "optimizer.learning_rate=3e-3",
      "data.batch_size=16"])
  sft_dir = os.path.join(out, "verifiable_sft", "model")
  run = load_config(RunConfig, None, VERIFIABLE + [
      "task=grpo", f"output_dir={os.path.join(out, 'grpo')}", f"seed={demo.seed}",
      f"loop.steps={demo.grpo_iterations}", "loop.log_every=20", f"model.init_from={sft_dir}",
      "grpo.max_new_tokens=8", "optimizer.learning_rate=1e-3"])
  final = run_grpo(run, progress=False, on_existing="overwrite")
  config, params, _ = load_model(sft_dir)
  k = run.grpo.group_size
  before = evaluate_pass(config, params, build_prompt_rows(run, "eval", 8)[0],
                         jax.random.PRNGKey(run.seed + 1), k=k, temperature=1.0,
                         max_new_tokens=8, eos_id=config.eos_token_id)
  results = {"sft": before, "grpo": {name: final[f"eval/{name}"] for name in before}}
  header = f"{'policy':<10} {'pass@1 (greedy)':>15} {'sampled pass@1':>14} {f'pass@{k}':>7}"
  lines = [header, "-" * len(header)]
  for name, r in results.items():
    lines.append(f"{name:<10} {r['pass@1']:>15.3f} {r['mean_correct']:>14.3f} "
                 f"{r[f'pass@{k}']:>7.3f}")
  print("\n".join(lines))
  return results


def format_table(results: dict) -> str:
  header = (f"{'policy':<10} {'gold reward':>11} {'KL to ref':>9} {'RM score':>8} "
            f"{'length':>6} {'RM acc':>6} {'implicit acc':>12}")
  lines = [header, "-" * len(header)]
  for name, r in results.items():
    fmt = lambda key: f"{r[key]:.3f}" if key in r else "-"
    lines.append(f"{name:<10} {fmt('gold_reward'):>11} {fmt('kl'):>9} {fmt('rm_score'):>8} "
                 f"{r.get('length', float('nan')):>6.1f} {fmt('explicit_rm_accuracy'):>6} "
                 f"{fmt('implicit_accuracy'):>12}")
  return "\n".join(lines)


def plot_results(results: dict, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, ax = plt.subplots(figsize=(5, 4))
  for name, r in results.items():
    ax.scatter(r["kl"], r["gold_reward"], s=60)
    ax.annotate(name, (r["kl"], r["gold_reward"]), textcoords="offset points", xytext=(6, 4))
  ax.set_xlabel("KL(policy || reference), nats per sequence")
  ax.set_ylabel("gold reward of samples")
  ax.set_title("Synthetic task: reward vs KL")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=120)
  plt.close(fig)
