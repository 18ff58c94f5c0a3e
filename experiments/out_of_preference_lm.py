"""Out-of-preference prompts at LM scale: Li, Xu, Yu 2023, Sec. 5, on the library's trainers.

Li, Xu, Yu, "Policy Optimization in RLHF: The Impact of Out-of-preference Data" (arXiv
2312.10584): a reward model learnt from preference pairs generalises beyond them, and policy
optimisation that queries it on more prompts (RMB-PO+, prompts without labels) does better
than on the preference prompts alone (RMB-PO), and both better than DPO on the pairs. The
bandit version is ``experiments/out_of_preference.py``; here the policies are tiny
transformers on the synthetic task (a Markov language with a known gold reward), and every
stage is one call of the library's trainers (``run_training`` / ``run_ppo``: ``jaxalign train
sft|rm|dpo|ppo``). Per seed (a new language, gold reward, data and initialisation:
``data.task_seed`` and ``seed`` both = the seed):

1. reference: ``task=sft`` on 4,096 source-chain rows (the demo's recipe);
2. preference data: ``num_pairs`` prompts, two responses each from the source chain (the
   reference's own distribution), labelled by Bradley-Terry on the gold reward
   (``data.label_beta``; noisy, as the paper's labels are);
3. reward model: ``task=rm`` from the reference on those pairs;
4. RMB-PO: ``task=ppo`` against the reward model on the pairs' own prompts
   (``data.online_prompts=pairs``); RMB-PO+ (1:r): the same plus ``r * num_pairs`` prompts
   without labels from the same distribution (``data.num_extra_prompts``; nested sets, so
   1:2 is inside 1:5 is inside 1:10). Every PPO run has the same iterations, rollout batch
   and optimiser: only the prompts it samples differ;
5. DPO: ``task=dpo`` on the same pairs, a sweep of ``loss.beta`` x training steps (DPO's
   KL hardly falls below a floor set by Adam's steps once beta is large, so its budget is the
   other knob that reaches small KLs).

Matched KL. Every PPO run uses Ziegler et al.'s adaptive KL controller (``ppo.adaptive_kl``)
with the same ``ppo.kl_target``; their measured held-out KLs still differ somewhat, and DPO's
KL is not controlled at all. So each policy is read at one KL per seed, the smallest held-out
KL of that seed's PPO runs, through mixtures: a per-prompt mixture ``t pi_1 + (1 - t) pi_2``
has gold reward ``t G_1 + (1 - t) G_2`` and, KL being convex, a KL of at most ``t KL_1 +
(1 - t) KL_2``, so every point on a chord between two policies is attainable (``frontier``:
``jaxalign.eval.frontier.upper_frontier``).
Every method is read on the upper concave hull of the reference and its own runs: a PPO run
on its chord with the reference (exact for the run with the smallest KL, a mixture for the
others), DPO on the hull of the reference and its whole sweep. Both readings are what
mixtures attain, lower bounds on what the method would reach if trained to that KL.

Measured on ``num_eval_prompts`` held-out prompts (the run's eval split, one sample each at
temperature 1, ``jaxalign.eval.sample_and_score``): the gold reward, the sequence-level
KL(pi || reference) in nats, the reward model's score, the length. The same on the
preference prompts themselves (cycled to a multiple of the sampler's batch of 128: two
samples each of 64) shows how much of PPO's gain is specific to the prompts it trained on.

Run: ``python -m experiments.out_of_preference_lm`` (``--quick`` for the reduced test
setting). Runs go to ``output_dir/runs/seed<k>/...``.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import numpy as np

from experiments._common import (cli_main, format_table, pyplot, run_seeds,
                                 seed_stat)
from jaxalign.config import RunConfig, load_config
from jaxalign.eval import sample_and_score
from jaxalign.eval.frontier import frontier_at as at_kl, upper_frontier as frontier
from jaxalign.models import load_model
from jaxalign.training.ppo_run import run_ppo
from jaxalign.training.runs import run_training
from jaxalign.training.setup import build_prompt_rows, synthetic_task


@dataclasses.dataclass(frozen=True)
class Config:
  seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
  num_pairs: int = 64              # N preference prompts (small: the RM's generalisation matters)
  extra_ratios: tuple[float, ...] = (2.0, 5.0, 10.0)  # RMB-PO+: r * N unlabelled prompts
  label_beta: float = 1.0          # Bradley-Terry labels on the gold reward
  batch_size: int = 32
  sft_steps: int = 300             # reference: 4,096 rows, lr 3e-3 cosine (the demo's recipe)
  rm_steps: int = 100              # reward model (lr 1e-3)
  dpo_betas: tuple[float, ...] = (0.3, 1.0, 3.0, 10.0)
  dpo_steps: tuple[int, ...] = (25, 100)  # every beta at each budget (lr 1e-3): DPO's KL range
  ppo_iterations: int = 40
  rollout_batch_size: int = 32
  ppo_learning_rate: float = 1.5e-4
  kl_target: float = 2.0           # ppo.kl_target (nats per sequence), every PPO run
  kl_horizon: float = 50.0
  kl_coef: float = 0.05            # the controller's starting coefficient
  num_eval_prompts: int = 1024
  output_dir: str = "results/out_of_preference_lm"


QUICK = Config(seeds=(0,), extra_ratios=(10.0,), sft_steps=150, rm_steps=60, dpo_betas=(3.0,),
               dpo_steps=(15, 60), ppo_iterations=25, num_eval_prompts=512,
               output_dir="results/out_of_preference_lm_quick")

EVAL_BATCH = 128  # sample_and_score's batch
REFERENCE = "reference (SFT)"


def rmb_po_name(ratio: float) -> str:
  return "RMB-PO" if ratio == 0 else f"RMB-PO+ (1:{ratio:g})"


def ppo_names(config: Config) -> list[str]:
  return [rmb_po_name(r) for r in (0.0, *config.extra_ratios)]


def dpo_name(beta: float, steps: int) -> str:
  return f"DPO (beta {beta:g}, {steps} steps)"


def dpo_names(config: Config) -> list[str]:
  return [dpo_name(b, n) for b in config.dpo_betas for n in config.dpo_steps]


def _overrides(config: Config, seed: int, folder: str) -> list[str]:
  return [f"output_dir={folder}", f"seed={seed}", f"data.task_seed={seed}",
          f"data.batch_size={config.batch_size}", "loop.log_every=50", "loop.checkpoint_every=0"]


def preference_data(config: Config) -> list[str]:
  """The ``data.*`` keys of the preference pairs (the same for RM, DPO and PPO's prompts)."""
  return [f"data.num_train={config.num_pairs}", f"data.label_beta={config.label_beta}"]


def _folder(config: Config, seed: int, name: str) -> str:
  return os.path.join(config.output_dir, "runs", f"seed{seed}", name)


def _train(config: Config, seed: int, name: str, overrides: list[str]) -> str:
  folder = _folder(config, seed, name)
  run = load_config(RunConfig, None, _overrides(config, seed, folder) + overrides)
  run_training(run, progress=False, on_existing="overwrite")
  return os.path.join(folder, "model")


def ppo_config(config: Config, seed: int, name: str, sft: str, rm: str,
               extra: int) -> RunConfig:
  """PPO against the reward model on the preference prompts plus ``extra`` unlabelled ones."""
  return load_config(RunConfig, None, _overrides(config, seed, _folder(config, seed, name)) + [
      "task=ppo", *preference_data(config), "data.online_prompts=pairs",
      f"data.num_extra_prompts={extra}", f"data.num_eval={config.num_eval_prompts}",
      f"model.init_from={sft}", f"online.reward_model={rm}",
      f"loop.steps={config.ppo_iterations}", "loop.log_every=5",
      f"optimizer.learning_rate={config.ppo_learning_rate}",
      f"ppo.rollout_batch_size={config.rollout_batch_size}", "ppo.adaptive_kl=true",
      f"ppo.kl_target={config.kl_target}", f"ppo.kl_horizon={config.kl_horizon}",
      f"ppo.kl_coef={config.kl_coef}"])


def train_seed(config: Config, seed: int) -> dict[str, str]:
  """Model folders of the reference, the reward model, every DPO and every PPO run."""
  sft = _train(config, seed, "sft", [
      "task=sft", f"loop.steps={config.sft_steps}", "data.num_train=4096",
      "optimizer.learning_rate=3e-3", "optimizer.schedule=cosine"])
  data = preference_data(config)
  rm = _train(config, seed, "rm", ["task=rm", *data, f"loop.steps={config.rm_steps}",
                                   f"model.init_from={sft}", "optimizer.learning_rate=1e-3"])
  folders = {REFERENCE: sft, "reward model": rm}
  for beta in config.dpo_betas:
    for steps in config.dpo_steps:
      folders[dpo_name(beta, steps)] = _train(config, seed, f"dpo_beta{beta:g}_steps{steps}", [
          "task=dpo", *data, f"loss.beta={beta}", f"loop.steps={steps}",
          f"model.init_from={sft}", "optimizer.learning_rate=1e-3"])
  for ratio in (0.0, *config.extra_ratios):
    name = rmb_po_name(ratio)
    extra = round(ratio * config.num_pairs)
    run = ppo_config(config, seed, f"ppo_extra{extra}", sft, rm, extra)
    run_ppo(run, progress=False, on_existing="overwrite")
    folders[name] = os.path.join(run.output_dir, "model")
  return folders


def ppo_history(model_folder: str) -> list[dict]:
  with open(os.path.join(os.path.dirname(model_folder), "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def evaluate_seed(config: Config, seed: int, folders: dict) -> dict:
  """Every policy on the held-out prompts and on the preference prompts (module docstring)."""
  run = ppo_config(config, seed, "eval", folders[REFERENCE], folders["reward model"], 0)
  task = synthetic_task(run)
  sets = {"held_out": build_prompt_rows(run, "eval", 24)[0],
          "preference": build_prompt_rows(run, "train", 24)[0]}
  # the preference prompts cycled to a multiple of the sampler's batch: the held-out set's
  # programs, compiled once (64 prompts: 2 samples each)
  cycled = np.resize(np.arange(len(sets["preference"])), -(-len(sets["preference"]) //
                                                           EVAL_BATCH) * EVAL_BATCH)
  indices = {"held_out": np.arange(len(sets["held_out"])), "preference": cycled}
  model_config, reference, _ = load_model(folders[REFERENCE])
  reward_model = load_model(folders["reward model"])[:2]
  with open(os.path.join(os.path.dirname(folders["reward model"]), "eval.json")) as f:
    out = {"reward model eval accuracy": json.load(f)["eval/accuracy"]}
  for name, folder in folders.items():
    if name == "reward model":
      continue
    params = load_model(folder)[1]
    out[name] = {}
    for key, rows in sets.items():
      batch = rows.batch(indices[key], rows.max_length)
      out[name][key] = sample_and_score(
          model_config, params, reference, batch.tokens, batch.attention_mask,
          jax.random.PRNGKey(1000 + seed), max_new_tokens=task.config.max_response_length,
          eos_id=model_config.eos_token_id, gold_reward=task.gold_reward,
          reward_model=reward_model, batch_size=EVAL_BATCH)
    if name.startswith("RMB-PO"):
      history = ppo_history(folder)
      out[name]["train_rollout_kl_last5"] = float(np.mean([h["rollout/kl"]
                                                           for h in history[-5:]]))
      out[name]["final_kl_coef"] = history[-1]["ppo/kl_coef"]
  return out


def _point(entry: dict, name: str) -> tuple[float, float]:
  return entry[name]["held_out"]["kl"], entry[name]["held_out"]["gold_reward"]


def matched_seed(config: Config, entry: dict) -> dict:
  """One seed at matched KL, the smallest held-out KL of its PPO runs: every method on the
  frontier of the reference and its own runs (``frontier``), so a PPO run on its chord with
  the reference, DPO on the hull of the reference and its whole sweep."""
  reference = _point(entry, REFERENCE)
  kl = min(_point(entry, n)[0] for n in ppo_names(config))
  out = {"kl": kl, "DPO (frontier)": at_kl([reference] + [_point(entry, n) for n in
                                                           dpo_names(config)], kl)}
  for name in ppo_names(config):
    out[name] = at_kl([reference, _point(entry, name)], kl)
  return out


def summarise(config: Config, per_seed: dict) -> dict:
  seeds = list(per_seed)
  out = {"policies": {}}
  for name in [REFERENCE, *dpo_names(config), *ppo_names(config)]:
    out["policies"][name] = {
        f"{key}/{metric}": seed_stat([per_seed[s][name][key][metric] for s in seeds])
        for key in ("held_out", "preference")
        for metric in ("gold_reward", "kl", "rm_score", "length")}
  for name in ppo_names(config):
    for metric in ("train_rollout_kl_last5", "final_kl_coef"):
      out["policies"][name][metric] = seed_stat([per_seed[s][name][metric] for s in seeds])
  matched = [matched_seed(config, per_seed[s]) for s in seeds]
  out["matched_kl"] = {k: seed_stat([m[k] for m in matched]) for k in matched[0]}
  gold = {k: out["matched_kl"][k]["seeds"] for k in matched[0]}
  above = lambda a, b: int(sum(x > y for x, y in zip(gold[a], gold[b])))
  out["paired"] = {**{f"{n} above DPO": above(n, "DPO (frontier)") for n in ppo_names(config)},
                   **{f"{n} above RMB-PO": above(n, "RMB-PO") for n in ppo_names(config)[1:]},
                   "seeds": len(seeds)}
  out["reward model eval accuracy"] = seed_stat([per_seed[s]["reward model eval accuracy"]
                                             for s in seeds])
  return out


COLORS = ["C0", "C2", "C9", "C4", "C6"]


def _color(name: str, config: Config) -> str:
  if name in ppo_names(config):
    return COLORS[ppo_names(config).index(name) % len(COLORS)]
  return "C7" if name == REFERENCE else "C3"


def _plot_frontier(ax, summary: dict, config: Config):
  policies = summary["policies"]
  point = lambda n: (policies[n]["held_out/kl"]["mean"], policies[n]["held_out/gold_reward"]
                     ["mean"])
  dpo = np.array([point(n) for n in dpo_names(config)])
  vertices = frontier([point(REFERENCE), *dpo])
  ax.plot(vertices[:, 0], vertices[:, 1], "-", color="C3", linewidth=1,
          label="DPO frontier (of the seed means)")
  ax.scatter(dpo[:, 0], dpo[:, 1], color="C3", marker="s", s=25, label="DPO sweep")
  for name, (kl, gold) in zip(dpo_names(config), dpo):
    label = name[len("DPO ("):-len(" steps)")].replace("beta ", "b").replace(", ", "/")
    ax.annotate(label, (kl, gold), textcoords="offset points", xytext=(3, 3), fontsize=6,
                color="C3")
  for name in [REFERENCE, *ppo_names(config)]:
    ax.scatter(*point(name), s=60, color=_color(name, config), label=name, zorder=3)
  ax.axvline(summary["matched_kl"]["kl"]["mean"], color="k", linestyle=":", linewidth=1,
             label="matched KL (mean)")
  ax.set_xscale("symlog", linthresh=1.0)
  ax.set_xlim(left=-0.1)
  ax.set_xlabel("KL(policy || reference), nats per sequence")
  ax.set_ylabel("held-out gold reward")
  ax.set_title(f"means over {len(config.seeds)} seeds; DPO labels: beta/steps", fontsize=9)
  ax.legend(fontsize=7)


def _plot_matched(ax, summary: dict, config: Config):
  matched = summary["matched_kl"]
  names = ["DPO (frontier)", *ppo_names(config)]
  for i, name in enumerate(names):
    ax.errorbar(i, matched[name]["mean"], yerr=np.nan_to_num(matched[name]["ci95"]),
                fmt="o", markersize=9, capsize=5, color=_color(name, config))
    seeds = matched[name]["seeds"]
    ax.scatter(np.full(len(seeds), i) + 0.12, seeds, s=12, color="k", zorder=3)
  ax.axhline(summary["policies"][REFERENCE]["held_out/gold_reward"]["mean"], color="C7",
             linestyle=":", label=REFERENCE)
  ax.set_xticks(np.arange(len(names)), [n.replace(" (", "\n(") for n in names], fontsize=8)
  ax.set_ylabel("held-out gold reward at matched KL")
  ax.set_title(f"at matched KL ({matched['kl']['mean']:.2f} nats, mean; PPO target "
               f"{config.kl_target:g}); mean, 95% CI, dots: seeds", fontsize=9)
  ax.legend(fontsize=7)


def _plot_where(ax, summary: dict, config: Config):
  for name in ppo_names(config):
    entry = summary["policies"][name]
    ax.scatter(entry["preference/gold_reward"]["seeds"], entry["held_out/gold_reward"]["seeds"],
               s=14, color=_color(name, config), alpha=0.5)
    ax.scatter(entry["preference/gold_reward"]["mean"], entry["held_out/gold_reward"]["mean"],
               s=70, color=_color(name, config), label=name)
  lims = ax.get_xlim()
  ax.plot(lims, lims, "k:", linewidth=1, label="held-out = preference")
  ax.set_xlabel(f"gold reward on the {config.num_pairs} preference prompts")
  ax.set_ylabel("gold reward on held-out prompts")
  ax.set_title("PPO: where the gain is (large: mean, small: seeds)", fontsize=9)
  ax.legend(fontsize=7)


def plot(summary: dict, config: Config):
  plt = pyplot()
  figure, axes = plt.subplots(1, 3, figsize=(17, 4.8))
  _plot_frontier(axes[0], summary, config)
  _plot_matched(axes[1], summary, config)
  _plot_where(axes[2], summary, config)
  figure.tight_layout()
  return figure


def run(config: Config = Config()) -> dict:
  seed_fn = lambda config, seed: evaluate_seed(config, seed, train_seed(config, seed))
  return run_seeds(config, seed_fn, summarise, plot, report)


def report(numbers: dict) -> str:
  summary = numbers["summary"]
  rows = [[name] + [entry[k]["mean"] for k in (
      "held_out/gold_reward", "held_out/kl", "held_out/rm_score", "held_out/length",
      "preference/gold_reward", "preference/kl")] for name, entry in summary["policies"].items()]
  table = format_table(["policy", "gold (held-out)", "KL", "RM score", "length",
                        "gold (pref.)", "KL (pref.)"], rows)
  matched = summary["matched_kl"]
  seeds = lambda e: ", ".join(f"{v:.2f}" for v in e["seeds"])
  lines = [f"means over {summary['paired']['seeds']} seeds:", table, "",
           f"at matched KL ({matched['kl']['mean']:.2f} nats; seeds {seeds(matched['kl'])}):"]
  lines += [f"  {name}: {entry['mean']:.3f} (seeds {seeds(entry)})"
            for name, entry in matched.items() if name != "kl"]
  lines.append("seeds where: " + ", ".join(f"{k}: {v}" for k, v in summary["paired"].items()))
  lines.append(f"reward model held-out accuracy: "
               f"{summary['reward model eval accuracy']['mean']:.3f}")
  lines.append(f"{numbers['runtime_s']:.1f} s; wrote {numbers['output_dir']}")
  return "\n".join(lines)


def main(argv=None):
  cli_main(__doc__, Config(), QUICK, run, argv, compilation_cache=True)


if __name__ == "__main__":
  main()
