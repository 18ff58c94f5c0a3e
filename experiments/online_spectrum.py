"""From offline to online: how on-policy, and how often the discriminator is refreshed.

One grid over the knobs of ``jaxalign train online-dpo`` on the synthetic task (a Markov
language with a known gold reward). The GAN view of RLHF: the policy is a generator, the
reward model a discriminator whose update is held in an outer loop so the generator has time
to learn. The grid: how often the policy's pairs are resampled from itself
(``online.refresh_every``: inf = offline DPO on the preference pairs, then 64, 16, 4, 1
policy steps) x how often the reward model that labels them is retrained on gold-labelled
pairs of the current policy's samples (``online.rm_refresh_every``: 0 = frozen, every 4
refreshes, every refresh). Offline has no refreshes, so only its frozen cell exists. One
extra point is RLHFlow's recipe (Dong et al. 2024, "RLHF Workflow"): 3 iterations, best vs
worst of k = 4 samples per prompt by a frozen Bradley-Terry reward model.

Per seed (a new language, gold reward, data and initialisation: ``data.task_seed`` and
``seed`` both = the seed), every stage is one ``run_training`` call:

1. reference: ``task=sft`` on 4,096 source-chain rows (the demo's recipe);
2. reward model: ``task=rm`` from the reference on ``num_pairs`` pairs of the reference's
   distribution labelled by Bradley-Terry on the gold reward (``data.label_beta``);
3. every cell: ``task=online-dpo`` from the reference, the same ``policy_steps``, batch,
   optimiser and ``loss.beta``, pairs labelled by the reward model (fixed reference). Offline
   trains on the reward model's own gold-labelled pairs. A refresh draws
   ``prompts_per_refresh`` prompts (``batch_size * refresh_every``, so each pair is seen about
   once, at least ``min_prompts_per_refresh`` for ties, at most ``num_pairs``); a reward-model
   retraining draws ``rm_refresh_prompts`` more (k samples each, the pair gold-labelled) and
   takes ``rm_refresh_steps`` Adam steps, its optimiser state kept across retrainings.
   A refresh or retraining whose samples mostly tie (a policy collapsed onto one response)
   ends the run there (``online.on_few_pairs=stop``): the steps it took are reported. A
   refreshing-RM cell that never reaches a retraining (refresh 64, every 4 refreshes: only
   refreshes 0 and 1 happen) is the frozen cell step for step, so that run is reused.

Gold labels spent: the library has no counter of gold labels; it logs, per retraining, the
pairs it formed from gold scores (``online/rm_refresh_pairs`` in ``metrics.jsonl``; ties,
i.e. identical samples, are not pairs). So a run's gold labels are ``num_pairs`` (the initial
reward model's pairs; offline DPO trains on those same pairs) plus the sum of its logged
``online/rm_refresh_pairs``; ``planned_gold_labels`` is the same count from the config (every
drawn pair labelled), and the retrainings that happened are read from the log too.

Measured on ``num_eval_prompts`` held-out prompts (one sample each at temperature 1,
``jaxalign.eval.sample_and_score``): the gold reward, the sequence-level KL(pi || reference)
in nats, the initial reward model's score, the length (and the entropy, when returned).

Run: ``python -m experiments.online_spectrum`` (``--quick`` for the reduced test setting).
Runs go to ``output_dir/runs/seed<k>/...``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import jax
import numpy as np

from experiments._common import (cli_main, format_table, pyplot, run_seeds,
                                 seed_stat, replot as common_replot)
from jaxalign.config import RunConfig, load_config
from jaxalign.eval import sample_and_score
from jaxalign.models import load_model
from jaxalign.training.runs import run_training
from jaxalign.training.setup import build_prompt_rows, synthetic_task

INF = math.inf


@dataclasses.dataclass(frozen=True)
class Config:
  seeds: tuple[int, ...] = (0, 1, 2)
  num_pairs: int = 512             # gold-labelled pairs of the initial RM (and offline DPO)
  label_beta: float = 1.0          # Bradley-Terry labels on the gold reward
  batch_size: int = 16
  sft_steps: int = 300             # reference: 4,096 rows, lr 3e-3 cosine (the demo's recipe)
  rm_steps: int = 100              # the initial reward model (lr 1e-3)
  policy_steps: int = 96           # every cell (divisible by rlhflow_iterations)
  learning_rate: float = 1e-3
  beta: float = 0.1
  refresh_every: tuple[float, ...] = (INF, 64, 16, 4, 1)
  rm_refresh_every: tuple[int, ...] = (0, 4, 1)  # in refreshes; 0 = frozen
  samples_per_prompt: int = 2      # k of the grid (best vs worst of k)
  min_prompts_per_refresh: int = 32  # two batches of pairs: room for ties
  rm_refresh_prompts: int = 64     # gold-labelled pairs drawn per RM retraining
  rm_refresh_steps: int = 4        # one pass over them at batch_size 16
  rlhflow_iterations: int = 3
  rlhflow_samples: int = 4
  num_eval_prompts: int = 512
  output_dir: str = "results/online_spectrum"


QUICK = Config(seeds=(0,), num_pairs=256, sft_steps=150, rm_steps=60, policy_steps=48,
               refresh_every=(INF, 16, 1), rm_refresh_every=(0, 1), num_eval_prompts=256,
               output_dir="results/online_spectrum_quick")

EVAL_BATCH = 128  # sample_and_score's batch
REFERENCE = "reference (SFT)"
RLHFLOW = "RLHFlow (3 iter., best/worst of 4)"


def cell_name(refresh_every: float, rm_every: int) -> str:
  if math.isinf(refresh_every):
    return "offline"
  rm = {0: "RM frozen", 1: "RM every refresh"}.get(rm_every, f"RM every {rm_every}")
  return f"refresh {refresh_every:g}, {rm}"


def cells(config: Config) -> list[tuple[float, int]]:
  """(refresh_every, rm_refresh_every) of every grid cell: offline only frozen."""
  return [(every, rm) for every in config.refresh_every for rm in config.rm_refresh_every
          if not (math.isinf(every) and rm)]


def policy_names(config: Config) -> list[str]:
  return [cell_name(*c) for c in cells(config)] + [RLHFLOW]


def prompts_per_refresh(config: Config, every: float) -> int:
  """Enough prompts that each step sees fresh pairs, at least two batches, at most N."""
  return max(config.min_prompts_per_refresh, min(int(config.batch_size * every),
                                                 config.num_pairs))


def num_refreshes(steps: int, every: float) -> int:
  """Refreshes of a run: one at every step that is a multiple of ``every`` (step 0 too)."""
  return 0 if math.isinf(every) else -(-steps // int(every))


def planned_retrainings(steps: int, every: float, rm_every: int) -> int:
  """Reward-model retrainings: at refreshes ``i > 0`` with ``i % rm_every == 0``."""
  if not rm_every or math.isinf(every):
    return 0
  return (num_refreshes(steps, every) - 1) // rm_every


def planned_gold_labels(config: Config, retrainings: int) -> int:
  """The initial reward model's pairs plus one gold-labelled pair (best vs worst of k) per
  prompt of every retraining."""
  return config.num_pairs + retrainings * config.rm_refresh_prompts


def _overrides(config: Config, seed: int, folder: str) -> list[str]:
  return [f"output_dir={folder}", f"seed={seed}", f"data.task_seed={seed}",
          f"data.batch_size={config.batch_size}", "loop.log_every=50", "loop.checkpoint_every=0"]


def preference_data(config: Config) -> list[str]:
  """The ``data.*`` keys of the gold-labelled pairs (the RM's and offline DPO's)."""
  return [f"data.num_train={config.num_pairs}", f"data.label_beta={config.label_beta}"]


def _folder(config: Config, seed: int, name: str) -> str:
  return os.path.join(config.output_dir, "runs", f"seed{seed}", name)


def _train(config: Config, seed: int, name: str, overrides: list[str]) -> str:
  folder = _folder(config, seed, name)
  run = load_config(RunConfig, None, _overrides(config, seed, folder) + overrides)
  run_training(run, progress=False, on_existing="overwrite")
  return os.path.join(folder, "model")


def online_overrides(config: Config, sft: str, rm: str, every: float, rm_every: int,
                     samples: int) -> list[str]:
  """One ``task=online-dpo`` cell: the same steps, optimiser and beta for every cell."""
  keys = ["task=online-dpo", *preference_data(config), "data.num_eval=128",
          f"model.init_from={sft}", f"loop.steps={config.policy_steps}",
          f"optimizer.learning_rate={config.learning_rate}", f"loss.beta={config.beta}",
          f"online.refresh_every={every}"]
  if math.isinf(every):
    return keys
  return keys + [
      "online.labeller=reward_model", f"online.reward_model={rm}", "online.pairs=best_worst",
      "online.on_few_pairs=stop",
      f"online.samples_per_prompt={samples}",
      f"online.prompts_per_refresh={prompts_per_refresh(config, every)}",
      f"online.rm_refresh_every={rm_every}",
      f"online.rm_refresh_prompts={config.rm_refresh_prompts}",
      f"online.rm_refresh_steps={config.rm_refresh_steps}"]


def _run_dir(every: float, rm_every: int) -> str:
  return "offline" if math.isinf(every) else f"refresh{every:g}_rm{rm_every}"


def train_seed(config: Config, seed: int) -> dict[str, str]:
  """Model folders of the reference, the reward model and every policy."""
  sft = _train(config, seed, "sft", [
      "task=sft", f"loop.steps={config.sft_steps}", "data.num_train=4096",
      "optimizer.learning_rate=3e-3", "optimizer.schedule=cosine"])
  rm = _train(config, seed, "rm", ["task=rm", *preference_data(config),
                                   f"loop.steps={config.rm_steps}", f"model.init_from={sft}",
                                   "optimizer.learning_rate=1e-3"])
  folders = {REFERENCE: sft, "reward model": rm}
  for every, rm_every in cells(config):
    name = cell_name(every, rm_every)
    if rm_every and not planned_retrainings(config.policy_steps, every, rm_every):
      folders[name] = folders[cell_name(every, 0)]  # never retrains: the frozen run exactly
      continue
    folders[name] = _train(config, seed, _run_dir(every, rm_every), online_overrides(
        config, sft, rm, every, rm_every, config.samples_per_prompt))
  every = config.policy_steps // config.rlhflow_iterations
  folders[RLHFLOW] = _train(config, seed, "rlhflow", online_overrides(
      config, sft, rm, every, 0, config.rlhflow_samples))
  return folders


def read_history(model_folder: str) -> list[dict]:
  with open(os.path.join(os.path.dirname(model_folder), "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def spending(config: Config, history: list[dict], every: float, samples: int) -> dict:
  """Policy steps, refreshes, retrainings, samples drawn and gold labels, from the run's log."""
  stopped = [h for h in history if "online/stopped_early" in h]
  refreshes = sum("online/iteration" in h for h in history)  # the stopping one drew samples
  drawn = [h["online/rm_refresh_pairs"] for h in history if "online/rm_refresh_pairs" in h]
  retrainings = len(drawn) - sum("online/rm_refresh_pairs" in h for h in stopped)
  policy_draws = refreshes - sum("online/rm_refresh_pairs" in h for h in stopped)
  prompts = 0 if math.isinf(every) else prompts_per_refresh(config, every)
  trained = [h["step"] for h in history if any(k.startswith("train/") for k in h)]
  steps = stopped[0]["step"] if stopped else max(trained)  # the last train row: the last step
  return {"policy_steps": steps, "stopped_early": float(bool(stopped)),
          "refreshes": refreshes, "rm_retrainings": retrainings,
          "policy_samples": policy_draws * prompts * samples,
          "rm_samples": len(drawn) * config.rm_refresh_prompts * samples,
          "gold_labels": config.num_pairs + int(sum(drawn)),
          "planned_gold_labels": planned_gold_labels(config, len(drawn))}


def _spec(config: Config, name: str) -> tuple[float, int, int]:
  if name == RLHFLOW:
    return config.policy_steps // config.rlhflow_iterations, 0, config.rlhflow_samples
  every, rm_every = next(c for c in cells(config) if cell_name(*c) == name)
  return every, rm_every, config.samples_per_prompt


def evaluate_seed(config: Config, seed: int, folders: dict) -> dict:
  """Every policy on the same held-out prompts and key; its spending read from its log."""
  run = load_config(RunConfig, None, ["task=online-dpo", f"data.task_seed={seed}",
                                      f"data.num_eval={config.num_eval_prompts}"])
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
    if name != REFERENCE:
      every, _, samples = _spec(config, name)
      out[name].update(spending(config, read_history(folder), every, samples))
  return out


def summarise(config: Config, per_seed: dict) -> dict:
  seeds = list(per_seed)
  out = {"policies": {}}
  for name in [REFERENCE, *policy_names(config)]:
    keys = [k for k, v in per_seed[seeds[0]][name].items() if isinstance(v, (int, float))]
    out["policies"][name] = {k: seed_stat([per_seed[s][name][k] for s in seeds]) for k in keys}
  gold = lambda name: np.array(out["policies"][name]["gold_reward"]["seeds"])
  above = lambda a, b: int(np.sum(gold(a) > gold(b)))
  frozen = [cell_name(e, 0) for e in config.refresh_every]
  out["paired"] = {f"{a} above {b}": above(a, b) for a, b in zip(frozen[1:], frozen[:-1])}
  for every in config.refresh_every[1:]:
    for rm in config.rm_refresh_every[1:]:
      out["paired"][f"{cell_name(every, rm)} above frozen"] = above(cell_name(every, rm),
                                                                   cell_name(every, 0))
  out["paired"]["seeds"] = len(seeds)
  out["reward model eval accuracy"] = seed_stat([per_seed[s]["reward model eval accuracy"]
                                             for s in seeds])
  return out


MARKERS = {0: "o", 4: "s", 1: "^"}


def _style(config: Config, name: str) -> dict:
  if name == REFERENCE:
    return dict(color="C7", marker="*", s=120)
  if name == RLHFLOW:
    return dict(color="k", marker="P", s=110)
  every, rm_every, _ = _spec(config, name)
  color = f"C{config.refresh_every.index(every)}"
  return dict(color=color, marker=MARKERS.get(rm_every, "D"), s=60)


def _plot_against(ax, summary: dict, config: Config, x_key: str, xlabel: str):
  policies = summary["policies"]
  for name in [REFERENCE, *policy_names(config)]:
    if x_key not in policies[name]:
      continue
    x, y = policies[name][x_key], policies[name]["gold_reward"]
    ax.scatter(x["seeds"], y["seeds"], s=8, color=_style(config, name)["color"], alpha=0.35)
    ax.errorbar(x["mean"], y["mean"], yerr=np.nan_to_num(y["ci95"]), fmt="none", capsize=3,
                color=_style(config, name)["color"], linewidth=1)
    ax.scatter(x["mean"], y["mean"], label=name, zorder=3, edgecolors="k", linewidths=0.5,
               **_style(config, name))
  ax.set_xlabel(xlabel)
  ax.set_ylabel("held-out gold reward")


def plot(summary: dict, config: Config):
  plt = pyplot()
  figure, axes = plt.subplots(1, 2, figsize=(14, 5.2))
  _plot_against(axes[0], summary, config, "kl", "KL(policy || reference), nats per sequence")
  axes[0].set_title(f"colour: refresh_every; marker: RM cadence (o frozen, s every 4, "
                    f"^ every refresh); star: reference;\nmean, 95% CI, dots: "
                    f"{len(config.seeds)} seeds", fontsize=8)
  _plot_against(axes[1], summary, config, "gold_labels", "gold-labelled pairs spent")
  axes[1].set_xscale("log")
  axes[1].set_title(f"initial RM: {config.num_pairs} pairs; each retraining "
                    f"{config.rm_refresh_prompts} more", fontsize=8)
  axes[1].legend(fontsize=6, loc="best")
  figure.tight_layout()
  return figure


def replot(output_dir: str) -> None:
  """Redraws ``output_dir/figure.png`` from its ``numbers.json``."""
  common_replot(output_dir, Config, lambda numbers, config: plot(numbers["summary"], config))


def run(config: Config = Config()) -> dict:
  seed_fn = lambda config, seed: evaluate_seed(config, seed, train_seed(config, seed))
  return run_seeds(config, seed_fn, summarise, plot, report)


COLUMNS = ("gold_reward", "kl", "rm_score", "length", "gold_labels", "policy_samples",
           "rm_samples", "rm_retrainings")


def report(numbers: dict) -> str:
  summary = numbers["summary"]
  mean = lambda entry, k: entry[k]["mean"] if k in entry else float("nan")
  rows = [[name] + [mean(entry, k) for k in COLUMNS]
          for name, entry in summary["policies"].items()]
  table = format_table(["policy", "gold", "KL", "RM score", "length", "gold labels",
                        "policy samples", "RM samples", "RM retrainings"], rows)
  lines = [f"means over {summary['paired']['seeds']} seeds:", table,
           "seeds where: " + ", ".join(f"{k}: {v}" for k, v in summary["paired"].items()),
           f"reward model held-out accuracy: "
           f"{summary['reward model eval accuracy']['mean']:.3f}",
           f"{numbers['runtime_s']:.1f} s; wrote {numbers['output_dir']}"]
  return "\n".join(lines)


def main(argv=None):
  cli_main(__doc__, Config(), QUICK, run, argv, compilation_cache=True)


if __name__ == "__main__":
  main()
