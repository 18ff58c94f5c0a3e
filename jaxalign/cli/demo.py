"""``jaxalign demo``: the built-in end-to-end job on the synthetic task (a few CPU minutes).

SFT a tiny reference policy on the synthetic language, train a reward model on gold-labelled
pairs, then from the reference: offline DPO and IPO, online (iterative) DPO labelled by the
reward model, and PPO against the reward model. Evaluate each policy's gold reward and KL to
the reference on held-out prompts, and the explicit (reward model) and implicit
(beta * log pi / pi_ref) reward accuracy on held-out pairs. Prints a table, saves a plot.
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


def _stage(demo: DemoConfig, name: str, overrides: list[str]) -> dict:
  run = load_config(RunConfig, None, [f"output_dir={os.path.join(demo.output_dir, name)}",
                                      f"seed={demo.seed}", f"data.batch_size={demo.batch_size}",
                                      "loop.log_every=50"] + overrides)
  # Each stage trains from the one before: always afresh (a kept stage could be stale).
  return run_training(run, progress=False, on_existing="overwrite")


def run_demo(demo: DemoConfig = DemoConfig()) -> dict:
  out = demo.output_dir
  sft_dir = os.path.join(out, "sft", "model")
  print(f"[1/4] SFT of the reference policy ({demo.sft_steps} steps)")
  _stage(demo, "sft", ["task=sft", f"loop.steps={demo.sft_steps}", "data.num_train=4096",
                       "optimizer.learning_rate=3e-3", "optimizer.schedule=cosine",
                       f"optimizer.total_steps={demo.sft_steps}"])
  print(f"[2/4] reward model from the reference ({demo.rm_steps} steps)")
  rm_eval = _stage(demo, "rm", ["task=rm", f"loop.steps={demo.rm_steps}",
                                f"model.init_from={sft_dir}", "optimizer.learning_rate=1e-3"])
  results = {"sft": {"explicit_rm_accuracy": rm_eval["eval/accuracy"]}}
  for loss, beta in demo.losses:
    print(f"[3/4] {loss} (beta {beta}) from the reference ({demo.dpo_steps} steps)")
    evaluation = _stage(demo, loss, ["task=dpo", f"loss.name={loss}", f"loss.beta={beta}",
                                     f"loop.steps={demo.dpo_steps}", f"model.init_from={sft_dir}",
                                     "optimizer.learning_rate=1e-3"])
    results[loss] = {"implicit_accuracy": evaluation["eval/rewards/accuracies"]}
  rm_dir = os.path.join(out, "rm", "model")
  if demo.online_dpo_steps:
    print(f"[3/4] online DPO labelled by the reward model ({demo.online_dpo_steps} steps)")
    evaluation = _stage(demo, "online_dpo", [
        "task=online-dpo", f"loop.steps={demo.online_dpo_steps}", f"model.init_from={sft_dir}",
        "optimizer.learning_rate=1e-3", f"online.reward_model={rm_dir}",
        "online.refresh_every=10", "online.samples_per_prompt=4",
        "online.prompts_per_refresh=128", "online.reference=previous_iterate"])
    results["online_dpo"] = {"implicit_accuracy": evaluation["eval/rewards/accuracies"]}
  if demo.ppo_iterations:
    print(f"[3/4] PPO against the reward model ({demo.ppo_iterations} iterations)")
    from jaxalign.training.ppo_run import run_ppo
    run_ppo(load_config(RunConfig, None, [
        "task=ppo", f"output_dir={os.path.join(out, 'ppo')}", f"seed={demo.seed}",
        f"loop.steps={demo.ppo_iterations}", "loop.log_every=10", f"model.init_from={sft_dir}",
        f"online.reward_model={rm_dir}", "optimizer.learning_rate=1.5e-4",
        "ppo.rollout_batch_size=64"]), progress=False, on_existing="overwrite")
    results["ppo"] = {}
  print("[4/4] sampling held-out prompts from every policy")
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
  print(f"wrote {os.path.join(out, 'results.json')} and {os.path.join(out, 'demo.png')}")
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
