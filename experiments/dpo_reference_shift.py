"""DPO and the reference's distribution, Xu et al. 2024 (Table 2), on the library's trainers.

Xu et al. 2024 (ICML), Table 2 and Sec. 4.3, reproduced with the library's own trainers and
the synthetic task's gold reward.

Xu et al., "Is DPO Superior to PPO for LLM Alignment? A Comprehensive Study" (arXiv
2404.10719): DPO from a reference (SFT on Alpaca) whose distribution differs from the one that
generated the preference data (SafeRLHF) does poorly; SFT on the preferred responses first
("DPO with SFT", *SFT (Safe)*) closes part of the gap; iterative DPO on the model's own samples
labelled by a learned reward model (*DPO-Iter*) closes more.

Here, per seed (a new synthetic language, gold reward, data and initialisation: ``task_seed``
and ``seed`` both = the seed), every stage is one ``run_training`` call (the trainers a user
runs, ``jaxalign train ...``):

1. base SFT (``task=sft``) on the source chain's responses: the reference of (a);
2. preference pairs whose responses come from another policy (``data.response_shift``: the
   chain ``(1 - s) source + s alternate``), labelled by the gold reward (Bradley-Terry,
   ``data.label_beta``);
3. (b)'s reference: SFT of the base model on the pairs' chosen responses
   (``data.sft_on_chosen=true``: "DPO with SFT");
4. DPO (``task=dpo``) from (a) the base SFT and from (b) SFT-on-chosen, each its own reference;
5. (c) DPO-Iter: ``task=online-dpo`` from (b) with ``online.reference=previous_iterate``,
   ``Config.iterations`` refreshes of ``online.samples_per_prompt`` samples per prompt, pairs
   labelled by a Bradley-Terry reward model (``task=rm`` from the base SFT, on the same
   shifted pairs), as Xu et al.'s learned-reward-model labels (``Config.iter_labeller="gold"``
   labels by the gold reward instead); the same number of policy steps as offline DPO.

Each ``Config.response_shifts`` entry runs 2-5 (the base SFT is shared): 1.0, the main
setting, and 0.0, the control whose pairs come from the base SFT's own chain (no gap).
Seeds 0, 1, 2 with the defaults: 33 training runs, about 13 minutes on 2 CPU cores.

Measured on held-out prompts (one sample each, temperature 1, ``jaxalign.eval.
sample_and_score``): the gold reward, the KL to the base SFT and to the policy's own start
(sequence-level, nats), and how much the policy generates outside what the preference data
covers. *Covered* is defined on bigrams: the set B of (previous token, next token) pairs that
occur in the responses (chosen and rejected, the prompt's last token then the response, EOS
included) of the training pairs. Two measures:

- ``uncovered_mass``: the policy's probability of an uncovered next token, ``sum_v pi(v |
  x, y_<t) 1[(y_{t-1}, v) not in B]``, exact at each position of its own samples, averaged
  over response positions (the LM analogue of the bandit's mass on uncovered responses);
- ``uncovered_samples``: the fraction of its samples that contain at least one uncovered
  bigram.

Run: ``python -m experiments.dpo_reference_shift`` (``--quick`` for the reduced test setting:
one seed, shift 1 only, smaller budgets). Runs go to ``output_dir/runs/seed<k>/...``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments._common import (cli_main, format_table, mean_interval, pyplot, write_results,
                                 replot as common_replot)
from jaxalign.config import RunConfig, load_config
from jaxalign.eval import sample_and_score
from jaxalign.models import load_model
from jaxalign.sampling import generate
from jaxalign.training.rollout import response_logits
from jaxalign.training.runs import run_training
from jaxalign.training.setup import build_rows, synthetic_task


@dataclasses.dataclass(frozen=True)
class Config:
  seeds: tuple[int, ...] = (0, 1, 2)
  # The preference data's responses: 1.0 = the alternate chain (the main setting); 0.0 = the
  # base SFT's own source chain (the control without a distribution gap).
  response_shifts: tuple[float, ...] = (1.0, 0.0)
  label_beta: float = 1.0         # Bradley-Terry labels on the gold reward (noisy, as people)
  num_pairs: int = 2048
  batch_size: int = 32
  sft_steps: int = 300            # base SFT (4,096 source rows, lr 3e-3 cosine: the demo's)
  sft_chosen_steps: int = 150     # SFT on the chosen responses (lr 1e-3)
  rm_steps: int = 150             # the reward model that labels DPO-Iter's pairs (lr 1e-3)
  dpo_steps: int = 200            # offline DPO and DPO-Iter (lr 1e-3)
  beta: float = 0.1
  iterations: int = 4             # DPO-Iter refreshes (Xu et al. report 4 iterations)
  samples_per_prompt: int = 4
  prompts_per_refresh: int = 512
  iter_labeller: str = "reward_model"  # or "gold"
  num_eval_prompts: int = 512
  output_dir: str = "results/dpo_reference_shift"


QUICK = Config(seeds=(0,), response_shifts=(1.0,), sft_steps=150, sft_chosen_steps=60,
               rm_steps=60, dpo_steps=80, iterations=2, prompts_per_refresh=256, num_pairs=1024,
               num_eval_prompts=256, output_dir="results/dpo_reference_shift_quick")

POLICIES = ("base SFT", "SFT on chosen", "DPO from base SFT", "DPO from SFT on chosen",
            "DPO-Iter")
STARTS = {"DPO from base SFT": "base SFT", "DPO from SFT on chosen": "SFT on chosen",
          "DPO-Iter": "SFT on chosen"}


def _run(config: Config, seed: int, name: str, overrides: list[str]) -> str:
  """One training run under ``output_dir/runs/seed<k>/<name>``; returns its model folder."""
  folder = os.path.join(config.output_dir, "runs", f"seed{seed}", *name.split("/"))
  run = load_config(RunConfig, None, [
      f"output_dir={folder}", f"seed={seed}", f"data.task_seed={seed}",
      f"data.batch_size={config.batch_size}", "loop.log_every=50", "loop.checkpoint_every=0",
      *overrides])
  run_training(run, progress=False, on_existing="overwrite")
  return os.path.join(folder, "model")


def preference_data(config: Config, shift: float) -> list[str]:
  """The ``data.*`` keys of the preference pairs (the same for SFT on chosen, RM and DPO)."""
  return [f"data.response_shift={shift}", f"data.label_beta={config.label_beta}",
          f"data.num_train={config.num_pairs}"]


def train_base(config: Config, seed: int) -> str:
  """The base SFT (source-chain rows): the reference of (a), shared by every shift."""
  return _run(config, seed, "sft", [
      "task=sft", f"loop.steps={config.sft_steps}", "data.num_train=4096",
      "optimizer.learning_rate=3e-3", "optimizer.schedule=cosine"])


def train_seed(config: Config, seed: int, shift: float, base: str) -> dict[str, str]:
  """Every policy's (and the reward model's) model folder for one seed and shift."""
  data = preference_data(config, shift)
  _stage = lambda name, overrides: _run(config, seed, f"shift{shift:g}/{name}", overrides)
  chosen = _stage("sft_on_chosen", [
      "task=sft", "data.sft_on_chosen=true", *data, f"loop.steps={config.sft_chosen_steps}",
      f"model.init_from={base}", "optimizer.learning_rate=1e-3"])
  dpo = lambda name, start: _stage(name, [
      "task=dpo", *data, f"loss.beta={config.beta}", f"loop.steps={config.dpo_steps}",
      f"model.init_from={start}", "optimizer.learning_rate=1e-3"])
  folders = {"base SFT": base, "SFT on chosen": chosen,
             "DPO from base SFT": dpo("dpo_base", base),
             "DPO from SFT on chosen": dpo("dpo_sft_chosen", chosen)}
  labels = ["online.labeller=gold"]
  if config.iter_labeller == "reward_model":
    rm = _stage("rm", ["task=rm", *data, f"loop.steps={config.rm_steps}",
                                   f"model.init_from={base}", "optimizer.learning_rate=1e-3"])
    labels = ["online.labeller=reward_model", f"online.reward_model={rm}"]
    folders["reward model"] = rm
  every = config.dpo_steps // config.iterations
  folders["DPO-Iter"] = _stage("dpo_iter", [
      "task=online-dpo", *data, *labels, f"loss.beta={config.beta}",
      f"loop.steps={every * config.iterations}", f"model.init_from={chosen}",
      "optimizer.learning_rate=1e-3", "online.reference=previous_iterate",
      f"online.refresh_every={every}", f"online.samples_per_prompt={config.samples_per_prompt}",
      f"online.prompts_per_refresh={config.prompts_per_refresh}"])
  return folders


def covered_bigrams(config: Config, seed: int, shift: float) -> np.ndarray:
  """``[V, V]`` bool: (previous, next) token pairs in the training pairs' responses, read from
  the rows the DPO runs train on (``setup.build_rows``)."""
  run = load_config(RunConfig, None, ["task=dpo", f"data.task_seed={seed}",
                                      *preference_data(config, shift)])
  rows, _ = build_rows(run, "train")
  vocab = synthetic_task(run).config.vocab_size
  covered = np.zeros((vocab, vocab), bool)
  for prompt, *responses in zip(rows.prompts, rows.chosen, rows.rejected):
    for response in responses:
      tokens = np.concatenate([prompt[-1:], response])
      covered[tokens[:-1], tokens[1:]] = True
  return covered


@functools.partial(jax.jit, static_argnames=("model_config",))
def _uncovered(model_config, params, sequence, sequence_mask, response_mask, uncovered):
  """Per sample ``[B]``: the mean over response positions of the exact next-token mass on
  uncovered bigrams, and whether a sampled bigram is uncovered."""
  P = sequence.shape[1] - response_mask.shape[1]
  probs = jax.nn.softmax(response_logits(model_config, params, sequence, sequence_mask, P))
  previous = sequence[:, P - 1:-1]  # [B, N] the token before each response token
  mass = jnp.sum(probs * uncovered[previous], axis=-1)  # [B, N]
  hit = uncovered[previous, sequence[:, P:]] & (response_mask > 0)  # [B, N]
  count = jnp.maximum(response_mask.sum(1), 1)
  return (mass * response_mask).sum(1) / count, hit.any(1)


def evaluate_seed(config: Config, seed: int, shift: float, folders: dict,
                  batch_size: int = 128) -> dict:
  """Every policy's metrics (module docstring) on the same held-out prompts and keys."""
  task = synthetic_task(load_config(RunConfig, None, [f"data.task_seed={seed}"]))
  prompts = task.prompt_rows(config.num_eval_prompts, seed=99)  # held-out, unshifted
  batch = prompts.batch(np.arange(len(prompts)), prompts.max_length)
  covered = covered_bigrams(config, seed, shift)
  uncovered = jnp.asarray(~covered)
  model_config = load_model(folders["base SFT"])[0]
  params = {name: load_model(folders[name])[1] for name in POLICIES}
  key = jax.random.PRNGKey(1000 + seed)
  budget = dict(max_new_tokens=task.config.max_response_length,
                eos_id=model_config.eos_token_id, batch_size=batch_size)
  out = {}
  for name in POLICIES:
    score = lambda reference, gold=None: sample_and_score(
        model_config, params[name], params[reference], batch.tokens, batch.attention_mask, key,
        gold_reward=gold, **budget)
    scores = score("base SFT", task.gold_reward)
    start = STARTS.get(name, name)
    own_kl = scores["kl"] if start == "base SFT" else score(start)["kl"]
    masses, hits = [], []
    for first in range(0, len(prompts), batch_size):  # sample_and_score's samples, again
      rows = slice(first, first + batch_size)
      samples = generate(model_config, params[name], batch.tokens[rows],
                         batch.attention_mask[rows], jax.random.fold_in(key, first),
                         max_new_tokens=budget["max_new_tokens"], eos_id=budget["eos_id"],
                         return_sequence=True)
      mass, hit = _uncovered(model_config, params[name], samples.sequence,
                             samples.sequence_mask, samples.response_mask, uncovered)
      masses.append(np.asarray(mass))
      hits.append(np.asarray(hit))
    out[name] = {"gold_reward": scores["gold_reward"], "kl_to_base_sft": scores["kl"],
                 "kl_to_start": own_kl, "length": scores["length"],
                 "uncovered_mass": float(np.concatenate(masses).mean()),
                 "uncovered_samples": float(np.concatenate(hits).mean())}
  out["covered_bigrams"] = int(covered.sum())
  out["iterations"] = iteration_gold(folders["DPO-Iter"])
  return out


def iteration_gold(model_folder: str) -> list[float]:
  """DPO-Iter's ``online/gold_reward`` (its samples' gold reward at each refresh)."""
  path = os.path.join(os.path.dirname(model_folder), "metrics.jsonl")
  with open(path) as f:
    rows = [json.loads(line) for line in f]
  return [row["online/gold_reward"] for row in rows if "online/gold_reward" in row]


METRICS = ("gold_reward", "kl_to_base_sft", "kl_to_start", "uncovered_mass",
           "uncovered_samples", "length")


def summarise(per_seed: dict) -> dict:
  """``per_seed {seed: metrics}`` of one shift -> means, 95% intervals, paired seed counts."""
  out = {}
  for name in POLICIES:
    out[name] = {}
    for metric in METRICS:
      values = [per_seed[s][name][metric] for s in per_seed]
      mean, half = mean_interval(values) if len(values) > 1 else (values[0], float("nan"))
      out[name][metric] = {"mean": float(mean), "ci95": float(half), "seeds": values}
  seeds = list(per_seed)
  above = lambda a, b, metric: int(sum(per_seed[s][a][metric] > per_seed[s][b][metric]
                                       for s in seeds))
  out["paired"] = {
      "gold: DPO from SFT on chosen above DPO from base SFT":
          above("DPO from SFT on chosen", "DPO from base SFT", "gold_reward"),
      "gold: DPO-Iter above DPO from SFT on chosen":
          above("DPO-Iter", "DPO from SFT on chosen", "gold_reward"),
      "gold: DPO from base SFT above base SFT":
          above("DPO from base SFT", "base SFT", "gold_reward"),
      "gold: DPO from SFT on chosen above SFT on chosen":
          above("DPO from SFT on chosen", "SFT on chosen", "gold_reward"),
      "uncovered mass: DPO from base SFT above base SFT":
          above("DPO from base SFT", "base SFT", "uncovered_mass"),
      "uncovered mass: DPO from base SFT above DPO from SFT on chosen":
          above("DPO from base SFT", "DPO from SFT on chosen", "uncovered_mass"),
      "uncovered mass: DPO from SFT on chosen above SFT on chosen":
          above("DPO from SFT on chosen", "SFT on chosen", "uncovered_mass"),
      "uncovered mass: DPO-Iter above DPO from SFT on chosen":
          above("DPO-Iter", "DPO from SFT on chosen", "uncovered_mass"),
      "seeds": len(seeds)}
  iterations = np.array([per_seed[s]["iterations"] for s in seeds])  # [seeds, refreshes]
  out["dpo_iter_refresh_gold"] = {"mean": iterations.mean(0).tolist(),
                                  "seeds": iterations.tolist()}
  out["covered_bigrams"] = [per_seed[s]["covered_bigrams"] for s in seeds]
  return out


COLORS = {"base SFT": "C7", "SFT on chosen": "C8", "DPO from base SFT": "C3",
          "DPO from SFT on chosen": "C0", "DPO-Iter": "C2"}


def shift_key(shift: float) -> str:
  return f"response_shift={shift:g}"


def plot(summaries: dict, config: Config):
  """Means (markers, bars) with every seed's value (small dots): with 3 seeds a 95% interval
  would mostly show the t quantile."""
  plt = pyplot()
  figure, axes = plt.subplots(1, 3, figsize=(17, 4.8))
  main = summaries[shift_key(config.response_shifts[0])]
  ax = axes[0]
  for index, (key, summary) in enumerate(summaries.items()):
    for name in POLICIES:
      entry = summary[name]
      ax.scatter(entry["kl_to_base_sft"]["seeds"], entry["gold_reward"]["seeds"], s=10,
                 color=COLORS[name], alpha=0.5, marker="o" if index == 0 else "s")
      ax.scatter(entry["kl_to_base_sft"]["mean"], entry["gold_reward"]["mean"], s=70,
                 color=COLORS[name] if index == 0 else "none", edgecolors=COLORS[name],
                 marker="o" if index == 0 else "s",
                 label=name if index == 0 else (f"{key}: hollow squares"
                                                if name == POLICIES[0] else None))
  ax.set_xlabel("KL(policy || base SFT), nats per sequence")
  ax.set_ylabel("gold reward of samples")
  ax.set_title(f"held-out prompts; {shift_key(config.response_shifts[0])} filled; "
               f"mean (large) and each of {len(config.seeds)} seeds (small)", fontsize=9)
  ax.legend(fontsize=7)
  ax = axes[1]
  x = np.arange(len(POLICIES))
  width = 0.4
  for offset, metric in ((-width / 2, "uncovered_mass"), (width / 2, "uncovered_samples")):
    ax.bar(x + offset, [main[n][metric]["mean"] for n in POLICIES], width,
           color=[COLORS[n] for n in POLICIES], alpha=1.0 if offset < 0 else 0.45)
    for i, name in enumerate(POLICIES):
      seeds = main[name][metric]["seeds"]
      ax.scatter(np.full(len(seeds), i + offset), seeds, s=8, color="k", zorder=3)
  ax.set_xticks(x, [n.replace(" from ", "\nfrom ").replace(" on ", "\non ") for n in POLICIES],
                fontsize=7)
  ax.set_ylabel("fraction")
  ax.set_title(f"{shift_key(config.response_shifts[0])}, outside the preference data's "
               "bigrams:\nnext-token mass per position (solid), samples with one (light); "
               "dots: seeds", fontsize=9)
  ax = axes[2]
  steps = np.arange(config.iterations) * (config.dpo_steps // config.iterations)
  for index, (key, summary) in enumerate(summaries.items()):
    curves = np.array(summary["dpo_iter_refresh_gold"]["seeds"])
    style = "-" if index == 0 else "--"
    for curve in curves:
      ax.plot(steps, curve, style, color=COLORS["DPO-Iter"], alpha=0.3, linewidth=1)
    ax.plot(steps, curves.mean(0), style, marker="o" if index == 0 else "s",
            color=COLORS["DPO-Iter"], mfc=None if index == 0 else "none",
            label=f"DPO-Iter's samples at each refresh, {key}")
  for name in ("DPO from base SFT", "DPO from SFT on chosen"):
    ax.axhline(main[name]["gold_reward"]["mean"], color=COLORS[name], linestyle=":",
               label=f"{name}, final ({shift_key(config.response_shifts[0])})")
  ax.set_xlabel("policy step")
  ax.set_ylabel("gold reward (training prompts)")
  ax.set_title(f"DPO-Iter, labels: {config.iter_labeller}; thin: seeds", fontsize=9)
  ax.legend(fontsize=7)
  figure.tight_layout()
  return figure


def replot(output_dir: str) -> None:
  """Redraws ``output_dir/figure.png`` from its ``numbers.json``."""
  common_replot(output_dir, Config, lambda numbers, config: plot(numbers["summary"], config))


def run(config: Config = Config()) -> dict:
  start = time.time()
  per_shift = {shift_key(shift): {} for shift in config.response_shifts}
  for seed in config.seeds:
    base = train_base(config, seed)
    for shift in config.response_shifts:
      folders = train_seed(config, seed, shift, base)
      per_shift[shift_key(shift)][seed] = evaluate_seed(config, seed, shift, folders)
  summaries = {key: summarise(per_seed) for key, per_seed in per_shift.items()}
  numbers = {"config": dataclasses.asdict(config), "summary": summaries,
             "per_seed": {key: {str(s): v for s, v in per_seed.items()}
                          for key, per_seed in per_shift.items()},
             "runtime_s": time.time() - start}
  numbers["output_dir"] = write_results(config.output_dir, numbers, plot(summaries, config))
  print(report(numbers))
  return numbers


def report(numbers: dict) -> str:
  lines = []
  for key, summary in numbers["summary"].items():
    rows = [[name] + [summary[name][m]["mean"] for m in METRICS] for name in POLICIES]
    table = format_table(["policy", "gold", "KL base", "KL start", "uncov. mass",
                          "uncov. samples", "length"], rows)
    paired = "\n".join(f"  {k}: {v}" for k, v in summary["paired"].items())
    lines += [f"{key}: means over {summary['paired']['seeds']} seeds:", table,
              f"seeds where:\n{paired}",
              f"DPO-Iter gold at each refresh: {summary['dpo_iter_refresh_gold']['mean']}", ""]
  lines.append(f"{numbers['runtime_s']:.1f} s; wrote {numbers['output_dir']}")
  return "\n".join(lines)


def main(argv=None):
  cli_main(__doc__, Config(), QUICK, run, argv)


if __name__ == "__main__":
  main()
