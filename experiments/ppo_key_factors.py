"""PPO's key factors, Xu et al. 2024 (Tables 3 and 4), on the library's trainers.

Xu et al., "Is DPO Superior to PPO for LLM Alignment? A Comprehensive Study" (arXiv
2404.10719), Table 3 (HH-RLHF, OpenAssistant reward): SFT 0.532, PPO 0.706, + advantage
normalisation 0.716, + large batch 0.716, + EMA reference 0.718; Table 4: DPO 0.611,
DPO-Iter 0.678, PPO 0.718. Here the policies are tiny transformers on the synthetic task (a
Markov language with a known gold reward) and every stage is one call of the library's
trainers (``run_training`` / ``run_ppo``: ``jaxalign train sft|rm|dpo|online-dpo|ppo``). Per
seed (a new language, gold reward, data and initialisation: ``data.task_seed`` = ``seed`` =
the seed):

1. reference: ``task=sft`` on 4,096 source-chain rows (the demo's recipe);
2. reward model: ``task=rm`` from the reference on ``num_pairs`` pairs of source-chain
   responses labelled by Bradley-Terry on the gold reward (``data.label_beta``);
3. the PPO ablation against the reward model, cumulative as in Table 3 (``ppo_variants``):
   the baseline (``ppo.whiten_advantages=false``), + advantage whitening, + large batch
   (``ppo.rollout_batch_size`` times ``large_batch_factor`` at the same iterations and the
   same ``ppo.num_minibatches``: the same policy-gradient steps on minibatches that many
   times larger, so that many times the samples), + EMA reference (``ppo.ref_ema``) at the
   paper's rate and at a faster one. A control outside the cumulative chain, "large batch,
   samples fixed", takes the large batch for ``1 / large_batch_factor`` of the iterations:
   the baseline's samples in a quarter of its steps;
4. DPO (``task=dpo`` on the reward model's pairs, ``loss.beta`` 0.1) and DPO-Iter
   (``task=online-dpo`` with ``online.reference=previous_iterate``, pairs of its own samples
   labelled by the reward model, as ``experiments/dpo_reference_shift.py``), drawing as many
   samples as the last PPO of the chain; DPO-Iter at beta 0.1 (Table 4's) drifts to several
   times PPO's KL (each refresh's reference is the last iterate, so KL accumulates). Two more
   DPO-Iter runs look for its frontier in PPO's KL range (``dpo_iter_variants``): beta
   ``dpo_iter_wide_beta``, and ``dpo_iter_small_lr`` (the same steps and samples, smaller
   Adam steps: DPO's KL has a floor set by its optimizer's steps once beta is large).

Every PPO run: a fixed KL penalty ``kl_coef`` (k1, per token; ``ppo.adaptive_kl=false``),
``ppo.epochs`` x ``ppo.num_minibatches`` = 4 optimizer steps per iteration, lr 1.5e-4,
fresh prompts of the task's distribution.

EMA rate. ReaLHF's config (the paper's code) moves the reference by 0.001 per optimizer step;
the library's ``ppo.ref_ema`` is applied once per PPO iteration, after ``ppo.epochs x
ppo.num_minibatches`` optimizer steps, so the per-iteration rate that moves the reference as
far is ``a_iter = 1 - (1 - 0.001)^(steps per iteration)`` (``ema_rate_per_iteration``; the
reference still lags within an iteration, which a per-step EMA would not).

Measured on ``num_eval_prompts`` held-out prompts (the run's eval split, one sample each at
temperature 1, ``jaxalign.eval.sample_and_score``): the gold reward (our analogue of the
paper's reward), the sequence-level KL(pi || SFT reference) in nats (the reference is always
the SFT model here, whatever the run trained against), the reward model's score, the length.
Gold reward alone rewards drifting, so every policy is also read at matched KL: the smallest
held-out KL of that seed's Table 3 variants (the chain's four runs and the fast EMA), a
policy above it on its chord with the reference (a per-prompt mixture attains it:
``out_of_preference_lm.at_kl``), one below it where it is; "DPO-Iter (frontier)" on the hull
of the reference and the three DPO-Iter runs. Chords are lower bounds on what the method would
reach if trained to that KL, loose for a policy far beyond it.

Run: ``python -m experiments.ppo_key_factors`` (``--quick`` for the reduced test setting).
Runs go to ``output_dir/runs/seed<k>/...``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import numpy as np

from experiments._common import (cli_main, format_table, pyplot, seed_stat,
                                 write_results, replot as common_replot)
from experiments.out_of_preference_lm import at_kl
from jaxalign.config import RunConfig, load_config
from jaxalign.eval import sample_and_score
from jaxalign.models import load_model
from jaxalign.training.ppo_run import run_ppo
from jaxalign.training.runs import run_training
from jaxalign.training.setup import build_prompt_rows, synthetic_task


@dataclasses.dataclass(frozen=True)
class Config:
  seeds: tuple[int, ...] = (0, 1, 2)
  num_pairs: int = 2048            # the reward model's (and DPO's) preference pairs
  label_beta: float = 1.0          # Bradley-Terry labels on the gold reward
  batch_size: int = 32
  sft_steps: int = 300             # reference: 4,096 rows, lr 3e-3 cosine (the demo's recipe)
  rm_steps: int = 150              # reward model (lr 1e-3)
  ppo_iterations: int = 40
  rollout_batch_size: int = 32     # the baseline's prompts per iteration
  large_batch_factor: int = 4      # "+ large batch": this many times the rollout batch
  ppo_epochs: int = 2              # ppo.epochs x ppo.num_minibatches optimizer steps per
  ppo_minibatches: int = 2         #   iteration, for every batch size
  ppo_learning_rate: float = 1.5e-4
  kl_coef: float = 0.1             # fixed KL penalty (per token, k1; ReaLHF's kl_ctl example)
  ema_rate_per_step: float = 0.001  # ReaLHF's reference EMA, per optimizer step
  fast_ema_rate: float = 0.05      # a faster per-iteration rate
  dpo_beta: float = 0.1
  dpo_learning_rate: float = 1e-3
  dpo_iter_wide_beta: float = 1.0  # two more DPO-Iter runs towards PPO's KL range
  dpo_iter_small_lr: float = 1e-4
  dpo_steps: int = 200             # offline DPO and DPO-Iter (lr 1e-3)
  dpo_iterations: int = 4          # DPO-Iter refreshes
  dpo_samples_per_prompt: int = 4
  num_eval_prompts: int = 512
  output_dir: str = "results/ppo_key_factors"


QUICK = Config(seeds=(0,), num_pairs=1024, sft_steps=150, rm_steps=80, ppo_iterations=16,
               large_batch_factor=2, dpo_steps=80, dpo_iterations=2, num_eval_prompts=256,
               output_dir="results/ppo_key_factors_quick")

EVAL_BATCH = 128  # sample_and_score's batch
REFERENCE = "SFT"
DPO, DPO_ITER = "DPO", "DPO-Iter"
DPO_ITER_FRONTIER = "DPO-Iter (frontier)"


def dpo_iter_variants(config: Config) -> list[tuple[str, str, float, float]]:
  """``(name, folder, beta, learning rate)``: Table 4's DPO-Iter, then the two runs towards
  PPO's KL range (module docstring)."""
  wide, small = config.dpo_iter_wide_beta, config.dpo_iter_small_lr
  return [(DPO_ITER, "dpo_iter", config.dpo_beta, config.dpo_learning_rate),
          (f"DPO-Iter (beta {wide:g})", f"dpo_iter_beta{wide:g}", wide,
           config.dpo_learning_rate),
          (f"DPO-Iter (lr {small:g})", f"dpo_iter_lr{small:g}", config.dpo_beta, small)]


def dpo_iter_names(config: Config) -> list[str]:
  return [name for name, *_ in dpo_iter_variants(config)]


@dataclasses.dataclass(frozen=True)
class PPOVariant:
  name: str
  folder: str
  whiten_advantages: bool
  rollout_batch_size: int
  iterations: int
  ref_ema: float = 0.0


def ema_rate_per_iteration(rate_per_step: float, steps_per_iteration: int) -> float:
  """The once-per-iteration EMA rate that moves the reference as far as ``steps_per_iteration``
  per-step updates at ``rate_per_step``: ``1 - (1 - rate)^steps`` (module docstring)."""
  return 1.0 - (1.0 - rate_per_step) ** steps_per_iteration


def steps_per_iteration(config: Config) -> int:
  return config.ppo_epochs * config.ppo_minibatches


def ppo_variants(config: Config) -> list[PPOVariant]:
  """Table 3's cumulative chain, then the fast-EMA sibling and the samples-fixed control."""
  small, large = config.rollout_batch_size, config.rollout_batch_size * config.large_batch_factor
  iterations = config.ppo_iterations
  paper_rate = ema_rate_per_iteration(config.ema_rate_per_step, steps_per_iteration(config))
  return [
      PPOVariant("PPO (baseline)", "ppo_baseline", False, small, iterations),
      PPOVariant("+ advantage whitening", "ppo_whiten", True, small, iterations),
      PPOVariant("+ large batch", "ppo_large", True, large, iterations),
      PPOVariant("+ EMA reference (paper rate)", "ppo_ema_paper", True, large, iterations,
                 paper_rate),
      PPOVariant(f"+ EMA reference (fast, {config.fast_ema_rate:g}/iter)", "ppo_ema_fast",
                 True, large, iterations, config.fast_ema_rate),
      PPOVariant("large batch, samples fixed", "ppo_large_fixed_samples", True, large,
                 iterations // config.large_batch_factor)]


def ppo_names(config: Config) -> list[str]:
  return [v.name for v in ppo_variants(config)]


def chain_names(config: Config) -> list[str]:
  """The cumulative rows of Table 3 (the paper's rate for the EMA)."""
  return ppo_names(config)[:4]


def dpo_iter_prompts(config: Config) -> int:
  """Prompts per DPO-Iter refresh so that it draws the samples of the last PPO of the chain."""
  chain = ppo_variants(config)[3]
  samples = chain.iterations * chain.rollout_batch_size
  return samples // (config.dpo_iterations * config.dpo_samples_per_prompt)


def compute(config: Config) -> dict:
  """Policy steps and samples drawn by each trained policy (per seed)."""
  out = {v.name: {"policy_steps": v.iterations * steps_per_iteration(config),
                  "samples_drawn": v.iterations * v.rollout_batch_size,
                  "iterations": v.iterations, "rollout_batch_size": v.rollout_batch_size,
                  "ref_ema_per_iteration": v.ref_ema} for v in ppo_variants(config)}
  every = config.dpo_steps // config.dpo_iterations
  out[DPO] = {"policy_steps": config.dpo_steps, "samples_drawn": 0,
              "preference_pairs": config.num_pairs}
  for name in dpo_iter_names(config):
    out[name] = {"policy_steps": every * config.dpo_iterations,
                 "samples_drawn": config.dpo_iterations * dpo_iter_prompts(config)
                 * config.dpo_samples_per_prompt}
  return out


def _overrides(config: Config, seed: int, folder: str) -> list[str]:
  return [f"output_dir={folder}", f"seed={seed}", f"data.task_seed={seed}",
          f"data.batch_size={config.batch_size}", "loop.log_every=50", "loop.checkpoint_every=0"]


def preference_data(config: Config) -> list[str]:
  """The ``data.*`` keys of the preference pairs (the same for RM, DPO and DPO-Iter)."""
  return [f"data.num_train={config.num_pairs}", f"data.label_beta={config.label_beta}",
          f"data.num_eval={config.num_eval_prompts}"]


def _folder(config: Config, seed: int, name: str) -> str:
  return os.path.join(config.output_dir, "runs", f"seed{seed}", name)


def _train(config: Config, seed: int, name: str, overrides: list[str]) -> str:
  folder = _folder(config, seed, name)
  run = load_config(RunConfig, None, _overrides(config, seed, folder) + overrides)
  run_training(run, progress=False, on_existing="overwrite")
  return os.path.join(folder, "model")


def ppo_config(config: Config, seed: int, variant: PPOVariant, sft: str, rm: str) -> RunConfig:
  """One PPO variant against the reward model (fresh prompts, the same for every variant)."""
  return load_config(RunConfig, None, _overrides(config, seed, _folder(
      config, seed, variant.folder)) + [
      "task=ppo", *preference_data(config), f"model.init_from={sft}",
      f"online.reward_model={rm}", f"loop.steps={variant.iterations}", "loop.log_every=1",
      f"optimizer.learning_rate={config.ppo_learning_rate}",
      f"ppo.rollout_batch_size={variant.rollout_batch_size}",
      f"ppo.epochs={config.ppo_epochs}", f"ppo.num_minibatches={config.ppo_minibatches}",
      f"ppo.whiten_advantages={str(variant.whiten_advantages).lower()}",
      f"ppo.ref_ema={variant.ref_ema!r}", "ppo.adaptive_kl=false",
      f"ppo.kl_coef={config.kl_coef}"])


def train_seed(config: Config, seed: int) -> tuple[dict[str, str], dict[str, float]]:
  """Model folders of the reference, the reward model, DPO, DPO-Iter and every PPO variant,
  and each stage's seconds."""
  seconds, folders = {}, {}

  def timed(name, fn):
    begin = time.time()
    folders[name] = fn()
    seconds[name] = time.time() - begin

  timed(REFERENCE, lambda: _train(config, seed, "sft", [
      "task=sft", f"loop.steps={config.sft_steps}", "data.num_train=4096",
      "optimizer.learning_rate=3e-3", "optimizer.schedule=cosine"]))
  sft, data = folders[REFERENCE], preference_data(config)
  timed("reward model", lambda: _train(config, seed, "rm", [
      "task=rm", *data, f"loop.steps={config.rm_steps}", f"model.init_from={sft}",
      "optimizer.learning_rate=1e-3"]))
  rm = folders["reward model"]
  timed(DPO, lambda: _train(config, seed, "dpo", [
      "task=dpo", *data, f"loss.beta={config.dpo_beta}", f"loop.steps={config.dpo_steps}",
      f"model.init_from={sft}", f"optimizer.learning_rate={config.dpo_learning_rate}"]))
  every = config.dpo_steps // config.dpo_iterations
  for name, folder, beta, learning_rate in dpo_iter_variants(config):
    timed(name, lambda: _train(config, seed, folder, [
        "task=online-dpo", *data, "online.labeller=reward_model", f"online.reward_model={rm}",
        f"loss.beta={beta}", f"loop.steps={every * config.dpo_iterations}",
        f"model.init_from={sft}", f"optimizer.learning_rate={learning_rate}",
        "online.reference=previous_iterate", f"online.refresh_every={every}",
        f"online.samples_per_prompt={config.dpo_samples_per_prompt}",
        f"online.prompts_per_refresh={dpo_iter_prompts(config)}"]))
  for variant in ppo_variants(config):
    run = ppo_config(config, seed, variant, sft, rm)
    timed(variant.name, lambda: _ppo(run))
  return folders, seconds


def _ppo(run: RunConfig) -> str:
  run_ppo(run, progress=False, on_existing="overwrite")
  return os.path.join(run.output_dir, "model")


def ppo_history(model_folder: str) -> list[dict]:
  with open(os.path.join(os.path.dirname(model_folder), "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def evaluate_seed(config: Config, seed: int, folders: dict) -> dict:
  """Every policy on the same held-out prompts with the same key (module docstring)."""
  variant = ppo_variants(config)[0]
  run = ppo_config(config, seed, variant, folders[REFERENCE], folders["reward model"])
  task = synthetic_task(run)
  rows = build_prompt_rows(run, "eval", task.config.max_response_length)[0]
  batch = rows.batch(np.arange(len(rows)), rows.max_length)
  model_config, reference, _ = load_model(folders[REFERENCE])
  reward_model = load_model(folders["reward model"])[:2]
  with open(os.path.join(os.path.dirname(folders["reward model"]), "eval.json")) as f:
    out = {"reward model eval accuracy": json.load(f)["eval/accuracy"]}
  for name, folder in folders.items():
    if name == "reward model":
      continue
    out[name] = sample_and_score(
        model_config, load_model(folder)[1], reference, batch.tokens, batch.attention_mask,
        jax.random.PRNGKey(1000 + seed), max_new_tokens=task.config.max_response_length,
        eos_id=model_config.eos_token_id, gold_reward=task.gold_reward,
        reward_model=reward_model, batch_size=EVAL_BATCH)
    if name in ppo_names(config):
      history = ppo_history(folder)
      out[name]["train_rollout_gold"] = [h["rollout/gold_reward"] for h in history]
      out[name]["train_rollout_kl"] = [h["rollout/kl"] for h in history]
  return out


def matched_seed(config: Config, entry: dict) -> dict:
  """One seed at matched KL, the smallest held-out KL of its Table 3 PPO variants (not the
  samples-fixed control, which trains a quarter as long): every policy above that KL on its
  chord with the reference, one below it where it is (a lower bound either way)."""
  reference = (entry[REFERENCE]["kl"], entry[REFERENCE]["gold_reward"])
  kl = min(entry[n]["kl"] for n in ppo_names(config)[:5])
  out = {"kl": kl}
  for name in [DPO, *dpo_iter_names(config), *ppo_names(config)]:
    point = (entry[name]["kl"], entry[name]["gold_reward"])
    out[name] = at_kl([reference, point], kl) if point[0] >= kl else point[1]
  # the DPO-Iter runs and the reference: the hull of their mixtures (at_kl)
  points = [reference] + [(entry[n]["kl"], entry[n]["gold_reward"])
                          for n in dpo_iter_names(config)]
  out[DPO_ITER_FRONTIER] = (at_kl(points, kl) if max(p[0] for p in points) >= kl
                            else max(p[1] for p in points))
  return out


POLICY_METRICS = ("gold_reward", "kl", "rm_score", "length", "entropy")


def policy_names(config: Config) -> list[str]:
  return [REFERENCE, *ppo_names(config), DPO, *dpo_iter_names(config)]


def summarise(config: Config, per_seed: dict) -> dict:
  seeds = list(per_seed)
  out = {"policies": {}}
  for name in policy_names(config):
    metrics = [m for m in POLICY_METRICS if m in per_seed[seeds[0]][name]]
    out["policies"][name] = {m: seed_stat([per_seed[s][name][m] for s in seeds]) for m in metrics}
  matched = [matched_seed(config, per_seed[s]) for s in seeds]
  out["matched_kl"] = {k: seed_stat([m[k] for m in matched]) for k in matched[0]}
  gold = lambda name: [per_seed[s][name]["gold_reward"] for s in seeds]
  kl = lambda name: [per_seed[s][name]["kl"] for s in seeds]
  above = lambda a, b, values: int(sum(x > y for x, y in zip(values(a), values(b))))
  names = ppo_names(config)
  comparisons = [*zip(names[1:4], names[:3]), (names[4], names[2]), (names[5], names[2]),
                 (names[5], names[1]), (DPO_ITER, DPO), (names[3], DPO_ITER), (names[3], DPO)]
  out["paired"] = {"seeds": len(seeds)}
  for after, before in comparisons:
    out["paired"][f"gold: {after} above {before}"] = above(after, before, gold)
    out["paired"][f"KL: {after} above {before}"] = above(after, before, kl)
  at_matched = lambda name: out["matched_kl"][name]["seeds"]
  for after, before in [*zip(names[1:4], names[:3]), (names[4], names[2]),
                        (DPO_ITER_FRONTIER, DPO), (names[3], DPO_ITER_FRONTIER),
                        (names[3], DPO), (names[0], DPO_ITER_FRONTIER)]:
    out["paired"][f"matched KL: {after} above {before}"] = above(after, before, at_matched)
  for name in (DPO, DPO_ITER, names[3]):
    out["paired"][f"gold: {name} above SFT"] = above(name, REFERENCE, gold)
  out["reward model eval accuracy"] = seed_stat([per_seed[s]["reward model eval accuracy"]
                                             for s in seeds])
  out["compute"] = compute(config)
  return out


COLORS = {REFERENCE: "C7", DPO: "C3", DPO_ITER: "C1", DPO_ITER_FRONTIER: "C1"}
PPO_COLORS = ["C0", "C9", "C2", "C4", "C6", "C8"]


def _color(name: str, config: Config) -> str:
  names = ppo_names(config)
  if name in names:
    return PPO_COLORS[names.index(name)]
  return COLORS.get(name, "C5" if name.startswith("DPO-Iter (beta") else "olive")


def _plot_points(ax, summary: dict, config: Config):
  policies = summary["policies"]
  for name in policy_names(config):
    entry = policies[name]
    ax.scatter(entry["kl"]["seeds"], entry["gold_reward"]["seeds"], s=10, alpha=0.5,
               color=_color(name, config))
    ax.scatter(entry["kl"]["mean"], entry["gold_reward"]["mean"], s=60, zorder=3,
               color=_color(name, config), label=name,
               marker="s" if name.startswith("DPO") else "o")
  ax.axvline(summary["matched_kl"]["kl"]["mean"], color="k", linestyle=":", linewidth=1,
             label="matched KL (mean)")
  ax.set_xscale("symlog", linthresh=1.0)
  ax.set_xlabel("KL(policy || SFT), nats per sequence")
  ax.set_ylabel("held-out gold reward")
  ax.set_title(f"held-out prompts: mean (large), seeds (small); {len(config.seeds)} seeds",
               fontsize=9)
  ax.legend(fontsize=6)


def _plot_bars(ax, summary: dict, config: Config):
  """Means (bars) and every seed (dots): with 3 seeds a 95% interval mostly shows the t
  quantile."""
  names = policy_names(config)
  x = np.arange(len(names))
  for offset, values in ((-0.2, {n: summary["policies"][n]["gold_reward"] for n in names}),
                         (0.2, {n: summary["matched_kl"].get(n, summary["policies"][n][
                             "gold_reward"]) for n in names})):
    ax.bar(x + offset, [values[n]["mean"] for n in names], 0.4,
           color=[_color(n, config) for n in names], alpha=1.0 if offset < 0 else 0.45)
    for i, name in enumerate(names):
      seeds = values[name]["seeds"]
      ax.scatter(np.full(len(seeds), i + offset), seeds, s=8, color="k", zorder=3)
  ax.set_xticks(x, [n.replace(" (", "\n(").replace("reference ", "ref.\n") for n in names],
                fontsize=6, rotation=60)
  ax.set_ylabel("held-out gold reward")
  ax.set_title("solid: as trained; light: at matched KL; dots: seeds", fontsize=9)


def _plot_curves(ax, per_seed: dict, config: Config, x_axis: str):
  """The rollouts' gold reward against ``x_axis``: "samples drawn" or "policy steps"."""
  for variant in ppo_variants(config):
    curves = np.array([per_seed[s][variant.name]["train_rollout_gold"] for s in per_seed])
    per_iteration = (variant.rollout_batch_size if x_axis == "samples drawn"
                     else steps_per_iteration(config))
    x = np.arange(1, curves.shape[1] + 1) * per_iteration
    ax.plot(x, curves.mean(0), color=_color(variant.name, config), label=variant.name,
            linewidth=1)
  ax.set_xlabel(x_axis)
  ax.set_ylabel("gold reward of the rollouts (training prompts)")
  ax.set_title(f"PPO during training, by {x_axis} (mean over seeds)", fontsize=9)
  ax.legend(fontsize=6)


def plot(summary: dict, per_seed: dict, config: Config):
  plt = pyplot()
  figure, axes = plt.subplots(1, 4, figsize=(22, 5))
  _plot_points(axes[0], summary, config)
  _plot_bars(axes[1], summary, config)
  _plot_curves(axes[2], per_seed, config, "samples drawn")
  _plot_curves(axes[3], per_seed, config, "policy steps")
  figure.tight_layout()
  return figure


def replot(output_dir: str) -> None:
  """Redraws ``output_dir/figure.png`` from its ``numbers.json``."""
  common_replot(output_dir, Config, lambda numbers, config: plot(
      numbers["summary"], numbers["per_seed"], config))


def run(config: Config = Config()) -> dict:
  start = time.time()
  per_seed, timings = {}, {}
  for seed in config.seeds:
    begin = time.time()
    folders, timings[seed] = train_seed(config, seed)
    per_seed[seed] = evaluate_seed(config, seed, folders)
    timings[seed]["total (with eval)"] = time.time() - begin
    print(f"seed {seed}: {timings[seed]['total (with eval)']:.1f} s", flush=True)
  summary = summarise(config, per_seed)
  numbers = {"config": dataclasses.asdict(config), "summary": summary,
             "per_seed": {str(s): v for s, v in per_seed.items()},
             "seed_runtime_s": {str(s): t for s, t in timings.items()},
             "runtime_s": time.time() - start}
  numbers["output_dir"] = write_results(config.output_dir, numbers,
                                        plot(summary, per_seed, config))
  print(report(numbers))
  return numbers


def report(numbers: dict) -> str:
  summary = numbers["summary"]
  matched, work = summary["matched_kl"], summary["compute"]
  rows = []
  for name, entry in summary["policies"].items():
    row = [name] + [entry[k]["mean"] for k in ("gold_reward", "kl", "rm_score", "length")]
    row.append(matched[name]["mean"] if name in matched else entry["gold_reward"]["mean"])
    row += [work.get(name, {}).get("policy_steps", "-"),
            work.get(name, {}).get("samples_drawn", "-")]
    rows.append(row)
  table = format_table(["policy", "gold", "KL", "RM score", "length", "gold @ matched KL",
                        "policy steps", "samples"], rows)
  seeds = lambda e: ", ".join(f"{v:.2f}" for v in e["seeds"])
  lines = [f"means over {summary['paired']['seeds']} seeds (matched KL "
           f"{matched['kl']['mean']:.2f} nats; seeds {seeds(matched['kl'])}):", table,
           f"{DPO_ITER_FRONTIER} at matched KL: {matched[DPO_ITER_FRONTIER]['mean']:.3f} "
           f"(seeds {seeds(matched[DPO_ITER_FRONTIER])})", "seeds where:"]
  lines += [f"  {k}: {v}" for k, v in summary["paired"].items() if k != "seeds"]
  lines.append(f"reward model held-out accuracy: "
               f"{summary['reward model eval accuracy']['mean']:.3f}")
  lines.append(f"{numbers['runtime_s']:.1f} s; wrote {numbers['output_dir']}")
  return "\n".join(lines)


def main(argv=None):
  cli_main(__doc__, Config(), QUICK, run, argv, compilation_cache=True)


if __name__ == "__main__":
  main()
