"""Implicit (DPORM) vs explicit (EXRM) reward under distribution shift: Lin et al. 2024.

Lin, Seto, ter Hoeve, Metcalf, Theobald, Wang, Zhang, Huang, Zhang, "On the Limited
Generalization Capability of the Implicit Reward Model Induced by Direct Preference
Optimization" (EMNLP Findings 2024, arXiv 2409.03650). From one SFT reference and one
preference dataset, a Bradley-Terry reward model (EXRM) and the implicit reward
``beta * log(pi / pi_ref)`` of a DPO policy (DPORM) rank held-out pairs about equally well in
distribution, but DPORM is worse under distribution shift (3% on average over five shifted
settings, up to 7%); so iterative DPO should be labelled by an explicit reward model.

Everything is trained by the library's own trainers (``run_training``) on the built-in
synthetic task (a Markov language with a known gold reward; ``jaxalign.data.SyntheticTask``):

- per model size and seed: SFT of the reference (``task=sft``; the seed is the init), then
  from it a reward model (``task=rm``) and DPO policies for a beta sweep (``task=dpo``), all on
  the same preference dataset (the task's default train pairs: in-distribution prompts and
  responses from the language's source chain, labelled by the gold reward, noiseless);
- held-out pairs labelled by the gold reward in four splits: ``in_distribution``,
  ``prompt_shift`` (prompts biased to the upper half of the vocabulary: ``prompt_shift``),
  ``response_shift`` (responses from the task's alternate chain, another policy:
  ``response_shift=1``) and ``both_shift``; pairwise accuracy of each model by
  ``jaxalign.eval.reward_model_accuracy`` / ``implicit_reward_accuracy`` (the trainers' own
  held-out evaluator);
- DPORM's beta per model size: the best mean accuracy on the runs' own in-distribution
  validation pairs (``eval/rewards/accuracies``, not the test splits);
- the consequence: online DPO (``task=online-dpo``, fixed SFT reference, from the DPO policy
  at ``online_beta``) labelled by DPORM (``online.labeller=implicit``) vs by EXRM
  (``online.labeller=reward_model``); gold reward of each refresh's samples
  (``online/gold_reward``) and of the final policy on held-out prompts. A loop whose samples
  all tie (a policy collapsed onto one response) ends there (``online.on_few_pairs=stop``).

With the defaults: 3 sizes x 3 seeds x (SFT, RM, 4 DPO) + 6 online runs = 60 training runs,
20-30 minutes on 2 shared CPU cores (most of it XLA compilation; seeds reuse the persistent
compilation cache). Results and the comparison with the paper: docs/reproductions.md.

Run: ``python -m experiments.implicit_vs_explicit_reward`` (``--quick`` for the test setting).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import tempfile
import time

import jax
import numpy as np

from experiments._common import cli_main, format_table, mean_interval, pyplot, write_results
from jaxalign.config import RunConfig, load_config
from jaxalign.data import SyntheticTask, SyntheticTaskConfig
from jaxalign.eval import implicit_reward_accuracy, reward_model_accuracy, sample_and_score
from jaxalign.models import count_params, load_model
from jaxalign.training.runs import run_training

SPLITS = ("in_distribution", "prompt_shift", "response_shift", "both_shift")
LABELLERS = ("reward_model", "implicit")
LABELLER_TITLES = {"reward_model": "online DPO labelled by EXRM",
                   "implicit": "online DPO labelled by DPORM"}


@dataclasses.dataclass(frozen=True)
class Config:
  sizes: tuple = (("small", 32, 1), ("medium", 64, 2), ("large", 128, 2))  # embed, layers
  seeds: tuple[int, ...] = (0, 1, 2)
  betas: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)
  sft_steps: int = 150
  sft_rows: int = 4096
  sft_learning_rate: float = 3e-3
  preference_steps: int = 200         # RM and every DPO policy: the same budget
  num_pairs: int = 2048               # the one preference dataset (data.num_train)
  learning_rate: float = 1e-3
  batch_size: int = 32
  num_validation: int = 256           # the runs' own in-distribution eval pairs (beta choice)
  num_test_pairs: int = 512           # per split
  prompt_shift: float = 2.0
  response_shift: float = 1.0
  online_size: str = "medium"
  online_beta: float = 0.1
  online_steps: int = 60
  online_refresh_every: int = 5
  online_prompts: int = 128
  online_samples: int = 4
  num_eval_prompts: int = 256         # held-out prompts for the final policies' gold reward
  output_dir: str = "results/implicit_vs_explicit_reward"
  runs_dir: str | None = None         # where the training runs go (None: a temporary folder)


QUICK = Config(sizes=(("small", 32, 1),), seeds=(0, 1), betas=(0.1,), sft_steps=100,
               sft_rows=2048, preference_steps=100, num_pairs=1024, num_validation=64,
               num_test_pairs=256, online_size="small", online_steps=20,
               online_refresh_every=5, online_prompts=64, num_eval_prompts=128,
               output_dir="results/implicit_vs_explicit_reward_quick")


def test_splits(config: Config, task: SyntheticTask) -> dict:
  """The four held-out splits (PreferenceRows, gold-labelled, noiseless), each its own seed."""
  shifts = {"in_distribution": (0.0, 0.0), "prompt_shift": (config.prompt_shift, 0.0),
            "response_shift": (0.0, config.response_shift),
            "both_shift": (config.prompt_shift, config.response_shift)}
  return {name: task.preference_pairs(config.num_test_pairs, 1000 + index, prompt_shift=p,
                                      response_shift=r).rows
          for index, (name, (p, r)) in enumerate(shifts.items())}


class Trainer:
  """``run_training`` with the experiment's shared keys; each run's output in its folder
  (stdout to ``train.log`` there)."""

  def __init__(self, root: str, config: Config):
    self.root, self.config = root, config
    self.seconds: dict[str, float] = {}

  def __call__(self, name: str, phase: str, overrides: list[str]) -> tuple[str, dict]:
    out = os.path.join(self.root, name)
    os.makedirs(out, exist_ok=True)
    run = load_config(RunConfig, None, [
        f"output_dir={out}", f"data.batch_size={self.config.batch_size}",
        "loop.checkpoint_every=0", "loop.log_every=1000"] + overrides)
    start = time.time()
    with open(os.path.join(out, "train.log"), "a") as log, contextlib.redirect_stdout(log):
      metrics = run_training(run, progress=False, on_existing="overwrite")
    self.seconds[phase] = self.seconds.get(phase, 0.0) + time.time() - start
    return os.path.join(out, "model"), metrics


def train_size(trainer: Trainer, config: Config, size: tuple, seed: int) -> dict:
  """SFT, RM and the DPO sweep of one model size and seed: model folders and validation."""
  name, embed, layers = size
  prefix = f"{name}/seed{seed}"
  shape = [f"model.embed_dim={embed}", f"model.num_layers={layers}", f"seed={seed}"]
  sft, _ = trainer(f"{prefix}/sft", "sft", shape + [
      "task=sft", f"loop.steps={config.sft_steps}", f"data.num_train={config.sft_rows}",
      "data.num_eval=64", f"optimizer.learning_rate={config.sft_learning_rate}"])
  pairs = [f"model.init_from={sft}", f"loop.steps={config.preference_steps}",
           f"data.num_train={config.num_pairs}", f"data.num_eval={config.num_validation}",
           f"optimizer.learning_rate={config.learning_rate}", f"seed={seed}"]
  rm, rm_eval = trainer(f"{prefix}/rm", "rm", ["task=rm"] + pairs)
  out = {"sft": sft, "rm": rm, "rm_validation": rm_eval["eval/accuracy"], "dpo": {},
         "dpo_validation": {}}
  for beta in config.betas:
    dpo, dpo_eval = trainer(f"{prefix}/dpo_beta{beta}", "dpo",
                            ["task=dpo", "loss.name=dpo", f"loss.beta={beta}"] + pairs)
    out["dpo"][beta], out["dpo_validation"][beta] = dpo, dpo_eval["eval/rewards/accuracies"]
  return out


def accuracies(models: dict, splits: dict, config: Config) -> dict:
  """``{split: {"exrm": acc, "dporm": {beta: acc}}}`` of one size and seed."""
  rm_config, rm_params, _ = load_model(models["rm"])
  policy_config, ref_params, _ = load_model(models["sft"])
  policies = {beta: load_model(path)[1] for beta, path in models["dpo"].items()}
  out = {}
  for split, rows in splits.items():
    out[split] = {"exrm": reward_model_accuracy(rm_config, rm_params, rows),
                  "dporm": {beta: implicit_reward_accuracy(policy_config, params, ref_params,
                                                           rows, beta=beta)
                            for beta, params in policies.items()}}
  return out


def summary(values) -> dict:
  """Mean, 95% interval half-width (NaN for one seed) and the per-seed values."""
  values = [float(v) for v in values]
  mean, half = mean_interval(values) if len(values) > 1 else (values[0], float("nan"))
  return {"mean": float(mean), "ci95": float(half), "per_seed": values}


def online_runs(trainer: Trainer, config: Config, models: dict, seed: int) -> dict:
  """Online DPO from the DPO policy at ``online_beta``, labelled by EXRM and by DPORM."""
  size = {s[0]: s for s in config.sizes}[config.online_size]
  out = {}
  for labeller in LABELLERS:
    overrides = [
        "task=online-dpo", f"model.embed_dim={size[1]}", f"model.num_layers={size[2]}",
        f"seed={seed}", f"model.init_from={models['dpo'][config.online_beta]}",
        f"model.reference_from={models['sft']}", f"online.labeller={labeller}",
        f"loss.beta={config.online_beta}", f"loop.steps={config.online_steps}",
        f"online.refresh_every={config.online_refresh_every}",
        f"online.prompts_per_refresh={config.online_prompts}",
        f"online.samples_per_prompt={config.online_samples}", "online.reference=fixed",
        "online.on_few_pairs=stop", f"optimizer.learning_rate={config.learning_rate}",
        "data.num_eval=64", f"loop.log_every={config.online_refresh_every}"]
    if labeller == "reward_model":
      overrides.append(f"online.reward_model={models['rm']}")
    path, _ = trainer(f"{config.online_size}/seed{seed}/online_{labeller}", "online",
                      overrides)
    with open(os.path.join(os.path.dirname(path), "metrics.jsonl")) as f:
      history = [json.loads(line) for line in f]
    refreshes = [h for h in history if "online/gold_reward" in h]
    out[labeller] = {"model": path, "steps": [h["step"] for h in refreshes],
                     "gold_reward": [h["online/gold_reward"] for h in refreshes],
                     "ties_skipped": [h["online/ties_skipped"] for h in refreshes],
                     "stopped_early": any("online/stopped_early" in h for h in refreshes)}
  return out


def held_out_gold(config: Config, task: SyntheticTask, models: dict, online: dict,
                  seed: int) -> dict:
  """Gold reward and KL to the SFT reference of samples on held-out prompts: the SFT
  reference, the DPO start and each online loop's final policy."""
  prompts = task.prompt_rows(config.num_eval_prompts, seed=99)
  batch = prompts.batch(np.arange(len(prompts)), prompts.max_length)
  policy_config, ref_params, _ = load_model(models["sft"])
  paths = {"sft": models["sft"], "dpo_start": models["dpo"][config.online_beta],
           **{labeller: run["model"] for labeller, run in online.items()}}
  out = {}
  for name, path in paths.items():
    scores = sample_and_score(policy_config, load_model(path)[1], ref_params, batch.tokens,
                              batch.attention_mask, jax.random.PRNGKey(seed),
                              max_new_tokens=task.config.max_response_length,
                              eos_id=policy_config.eos_token_id, gold_reward=task.gold_reward)
    out[name] = {"gold_reward": scores["gold_reward"], "kl": scores["kl"]}
  return out


def summarise_online(config: Config, per_seed: list[dict], finals: list[dict]) -> dict:
  iterations = config.online_steps // config.online_refresh_every
  out = {"size": config.online_size, "beta": config.online_beta, "steps": config.online_steps,
         "refresh_every": config.online_refresh_every, "seeds": list(config.seeds)}
  for labeller in LABELLERS:
    curves = [run[labeller]["gold_reward"] for run in per_seed]
    padded = np.full((len(curves), iterations), np.nan)
    for row, curve in enumerate(curves):
      padded[row, :len(curve)] = curve
    running = (~np.isnan(padded)).sum(0)
    out[labeller] = {
        "gold_reward_per_refresh": {
            "iteration": list(range(iterations)),
            "mean_over_running_seeds": [float(np.nanmean(c)) if n else None
                                        for c, n in zip(padded.T, running)],
            "seeds_running": running.tolist(),
            "per_seed": [list(map(float, c)) for c in curves]},
        "ties_skipped_per_refresh": [run[labeller]["ties_skipped"] for run in per_seed],
        "stopped_early_per_seed": [run[labeller]["stopped_early"] for run in per_seed],
        "final_held_out": {metric: summary([f[labeller][metric] for f in finals])
                           for metric in ("gold_reward", "kl")}}
  for name in ("sft", "dpo_start"):
    out[name] = {metric: summary([f[name][metric] for f in finals])
                 for metric in ("gold_reward", "kl")}
  return out


def summarise_size(config: Config, seeds: list[dict], validation: list[dict]):
  """(validation, accuracy) entries of one model size: DPORM's beta is the best mean
  validation accuracy; accuracies per split at that beta and at every beta, over seeds."""
  mean_validation = {b: np.mean([v[b] for v in validation]) for b in config.betas}
  chosen = max(config.betas, key=lambda b: mean_validation[b])
  chosen_validation = {
      "exrm": summary([v["rm"] for v in validation]),
      "dporm_by_beta": {str(b): summary([v[b] for v in validation]) for b in config.betas},
      "dporm_beta": chosen}
  entry = {}
  for split in SPLITS:
    exrm = [s[split]["exrm"] for s in seeds]
    dporm = {b: [s[split]["dporm"][b] for s in seeds] for b in config.betas}
    entry[split] = {
        "exrm_accuracy": summary(exrm),
        "dporm_accuracy": dict(summary(dporm[chosen]), beta=chosen),
        "dporm_accuracy_by_beta": {str(b): summary(v) for b, v in dporm.items()},
        "exrm_minus_dporm": summary(np.subtract(exrm, dporm[chosen]))}
  shifted = [np.subtract([s[split]["exrm"] for s in seeds],
                         [s[split]["dporm"][chosen] for s in seeds]) for split in SPLITS[1:]]
  entry["shifted_mean_exrm_minus_dporm"] = summary(np.mean(shifted, axis=0))
  return chosen_validation, entry


def run(config: Config = Config()) -> dict:
  """Trains every size and seed, measures the four splits and the online loops; writes
  ``numbers.json`` and ``figure.png`` under ``config.output_dir`` and returns the numbers."""
  start = time.time()
  task = SyntheticTask(SyntheticTaskConfig(seed=0))  # the runs' data.task_seed
  splits = test_splits(config, task)
  with contextlib.ExitStack() as stack:
    root = config.runs_dir or stack.enter_context(
        tempfile.TemporaryDirectory(prefix="implicit_vs_explicit_"))
    trainer = Trainer(root, config)
    per_size, validation, online, finals, params = {}, {}, [], [], {}
    for size in config.sizes:
      name = size[0]
      per_size[name], validation[name] = [], []
      for seed in config.seeds:
        models = train_size(trainer, config, size, seed)
        params.setdefault(name, count_params(load_model(models["sft"])[1]))
        per_size[name].append(accuracies(models, splits, config))
        validation[name].append(models["dpo_validation"] | {"rm": models["rm_validation"]})
        if name == config.online_size:
          online.append(online_runs(trainer, config, models, seed))
          finals.append(held_out_gold(config, task, models, online[-1], seed))
  numbers = {"config": dataclasses.asdict(config), "accuracy": {}, "validation": {},
             "params": params,
             "test_pairs": {split: len(rows) for split, rows in splits.items()}}
  for name, seeds in per_size.items():
    numbers["validation"][name], numbers["accuracy"][name] = summarise_size(
        config, seeds, validation[name])
  numbers["online"] = summarise_online(config, online, finals) if online else None
  numbers["runtime_s"] = time.time() - start
  numbers["runtime_by_phase_s"] = trainer.seconds
  numbers["output_dir"] = write_results(config.output_dir, numbers, plot(numbers, config))
  print(report(numbers))
  return numbers


def plot(numbers: dict, config: Config):
  """Accuracy bars per model size (top row) and the online loops' gold reward (bottom)."""
  plt = pyplot()
  sizes = list(numbers["accuracy"])
  figure = plt.figure(figsize=(5 * max(len(sizes), 2), 9), layout="constrained")
  grid = figure.add_gridspec(2, len(sizes))
  for col, name in enumerate(sizes):
    ax = figure.add_subplot(grid[0, col])
    _plot_accuracy(ax, numbers["accuracy"][name], config.betas)
    ax.set_title(f"{name} ({numbers['params'][name] / 1e3:.0f}k params)\nDPORM beta chosen on "
                 f"validation pairs: {numbers['validation'][name]['dporm_beta']}")
    if col == 0:
      ax.legend(fontsize=8, loc="lower left")
  if numbers["online"]:
    _plot_online(figure.add_subplot(grid[1, :]), numbers["online"], config)
  figure.suptitle("Lin et al. 2024: implicit (DPORM) vs explicit (EXRM) reward; bars: mean "
                  f"and 95% interval over {len(config.seeds)} seeds")
  return figure


def _plot_accuracy(ax, entry: dict, betas) -> None:
  """EXRM and DPORM at every beta, one group of bars per split."""
  positions = np.arange(len(SPLITS))
  bars = [("EXRM (reward model)", lambda s: entry[s]["exrm_accuracy"])]
  bars += [(f"DPORM beta {b}", lambda s, b=b: entry[s]["dporm_accuracy_by_beta"][str(b)])
           for b in betas]
  width = 0.8 / len(bars)
  for index, (label, get) in enumerate(bars):
    means = [get(s)["mean"] for s in SPLITS]
    errors = [get(s)["ci95"] for s in SPLITS]
    ax.bar(positions + index * width, means, width, yerr=errors, capsize=2, label=label)
  ax.set_xticks(positions + 0.4 - width / 2, [s.replace("_", "\n") for s in SPLITS])
  ax.set_ylim(0.4, 1.0)
  ax.axhline(0.5, color="gray", lw=0.5)
  ax.set_ylabel("pairwise accuracy vs gold labels")


def _plot_online(ax, online: dict, config: Config) -> None:
  """Gold reward of each refresh's samples: thin lines per seed, thick the mean."""
  colors = {"reward_model": "tab:blue", "implicit": "tab:red"}
  for labeller in LABELLERS:
    curve = online[labeller]["gold_reward_per_refresh"]
    for seed_curve in curve["per_seed"]:
      ax.plot(range(len(seed_curve)), seed_curve, color=colors[labeller], alpha=0.3, lw=1)
      if len(seed_curve) < len(curve["iteration"]):
        ax.plot(len(seed_curve) - 1, seed_curve[-1], "x", color=colors[labeller], ms=8)
    mean = [np.nan if m is None else m for m in curve["mean_over_running_seeds"]]
    ax.plot(curve["iteration"], mean, "o-", color=colors[labeller], lw=2,
            label=LABELLER_TITLES[labeller])
  ax.axhline(online["sft"]["gold_reward"]["mean"], color="gray", ls=":",
             label="SFT reference (held-out prompts)")
  ax.set_xlabel(f"refresh (every {online['refresh_every']} DPO steps; "
                f"{config.online_prompts} prompts x {config.online_samples} samples each)")
  ax.set_ylabel("gold reward of the refresh's samples")
  ax.set_title(f"online DPO from the DPO policy (beta {online['beta']}, {online['size']}), "
               "fixed SFT reference; thin: seeds; x: loop stopped (fewer untied pairs than a "
               "batch: the policy collapsed)")
  ax.legend(fontsize=8)


def report(numbers: dict) -> str:
  rows = []
  for name, entry in numbers["accuracy"].items():
    for split in SPLITS:
      e = entry[split]
      rows.append([name, split, e["exrm_accuracy"]["mean"], e["dporm_accuracy"]["mean"],
                   e["dporm_accuracy"]["beta"], e["exrm_minus_dporm"]["mean"]])
    rows.append([name, "shifted mean", "", "", "",
                 entry["shifted_mean_exrm_minus_dporm"]["mean"]])
  text = ["pairwise accuracy on gold-labelled held-out pairs (mean over seeds):",
          format_table(["size", "split", "EXRM", "DPORM", "beta", "EXRM - DPORM"], rows)]
  online = numbers["online"]
  if online:
    rows = []
    for labeller in LABELLERS:
      e = online[labeller]
      curve = e["gold_reward_per_refresh"]["mean_over_running_seeds"]
      rows.append([LABELLER_TITLES[labeller], curve[0], next(c for c in curve[::-1]
                                                              if c is not None),
                   e["final_held_out"]["gold_reward"]["mean"],
                   e["final_held_out"]["kl"]["mean"], sum(e["stopped_early_per_seed"])])
    text += ["", (f"online DPO ({online['size']}, beta {online['beta']}); SFT held-out gold "
                  f"{online['sft']['gold_reward']['mean']:.3f}, DPO start "
                  f"{online['dpo_start']['gold_reward']['mean']:.3f}:"),
             format_table(["loop", "gold @ refresh 0", "gold @ last refresh",
                           "final held-out gold", "final KL", "seeds stopped"], rows)]
  phases = ", ".join(f"{k} {v:.0f} s" for k, v in numbers["runtime_by_phase_s"].items())
  text.append(f"{numbers['runtime_s']:.0f} s ({phases}); wrote {numbers['output_dir']}")
  return "\n".join(text)


def main(argv=None):
  cli_main(__doc__, Config(), QUICK, run, argv, compilation_cache=True)


if __name__ == "__main__":
  main()
