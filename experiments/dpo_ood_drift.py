"""DPO moves mass onto responses no preference pair covers; PPO's KL holds it back.

Xu et al. 2024 (ICML), "Is DPO Superior to PPO for LLM Alignment? A Comprehensive Study"
(arXiv 2404.10719), Sec. 4, Theorem 4.1 and the synthetic 8 x 8 scenario of Fig. 1: DPO's loss
only sees log-ratios of covered pairs, so any mass it moves onto uncovered responses costs
it nothing; PPO maximises ``E_pi[r] - beta KL(pi || pi_ref)`` over everything the policy
generates. The paper gives no code or sizes for the scenario (openpsi-project/ReaLHF issue
#93), so the choices below are ours:

- prompts x_0..x_7 and responses y_0..y_7; gold reward r(x_i, y_j) = 1 if i == j else 0.
- pairs: for each prompt, k pairs (y_i > y_{i+m mod 8}), m = 1..k. Every response is chosen
  k times and rejected k times, so no response is better "on average"; the other 7 - k
  responses of a prompt are *uncovered*.
- policy and reward model: MLPs one-hot(8) -> 64 -> 64 -> 8 (ReLU), LeCun-normal init, output
  layer scaled by 0.1 (near-uniform at init).
- reference: the policy after SFT (library ``sft_loss``, 100 Adam steps) on the responses
  the pairs contain: the pairs are what the reference generates, so uncovered responses are
  the ones it rarely generates. DPO and PPO both start from it.
- DPO: library ``dpo_loss`` on all pairs, 2,000 full-batch Adam steps (lr 1e-3).
- PPO: a reward model trained on the same pairs (library ``bradley_terry_loss``, 300 Adam
  steps: every pair ranked correctly, not driven to zero loss), then 2,000 steps on the exact
  KL-regularised objective over the 8 responses (``_common.kl_regularized_policy_loss``:
  PPO's surrogate at ratio 1 on KL-penalised rewards, with the expectation taken exactly).
  A 2,000-step reward model is a sensitivity row: it extrapolates further off the pairs.

Grid: beta in {0.1, 0.5, 1.0} x k in {1, 2}, 10 seeds (network inits).

Run: ``python -m experiments.dpo_ood_drift`` (``--quick`` for the reduced test setting).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments._common import (adam, cli_main, fit, format_table, init_mlp,
                                 kl_regularized_policy_loss, mean_interval, mlp, pyplot,
                                 write_results)
from jaxalign.losses import bradley_terry_loss, dpo_loss, sft_loss


@dataclasses.dataclass(frozen=True)
class Config:
  num_prompts: int = 8  # = number of responses
  hidden: tuple[int, ...] = (64, 64)
  head_scale: float = 0.1
  sft_steps: int = 100
  reward_model_steps: tuple[int, ...] = (300, 2000)  # the first is the main setting
  steps: int = 2000  # DPO and PPO policy steps
  learning_rate: float = 1e-3
  betas: tuple[float, ...] = (0.1, 0.5, 1.0)
  pairs_per_prompt: tuple[int, ...] = (1, 2)
  num_seeds: int = 10
  heatmap: tuple[float, int] = (0.1, 2)  # (beta, k) shown as heat maps (seed 0)
  seed: int = 0
  output_dir: str = "results/dpo_ood_drift"


QUICK = Config(steps=800, betas=(0.1,), pairs_per_prompt=(2,), reward_model_steps=(300,),
               num_seeds=4, output_dir="results/dpo_ood_drift_quick")


def cyclic_pairs(num: int, k: int):
  """``(prompts, chosen, rejected)`` ``[num k]`` and the covered mask ``[num, num]``."""
  prompts = np.repeat(np.arange(num), k)
  chosen = prompts
  rejected = (prompts + np.tile(np.arange(1, k + 1), num)) % num
  covered = np.zeros((num, num), bool)
  covered[prompts, chosen] = covered[prompts, rejected] = True
  return prompts, chosen, rejected, covered


TITLES = {"reference": "reference (SFT)", "dpo": "DPO", "ppo_rm300": "PPO (RM 300 steps)",
          "ppo_rm2000": "PPO (RM 2000 steps)"}


def policy_names(config: Config) -> list[str]:
  return ["reference", "dpo"] + [f"ppo_rm{s}" for s in sorted(config.reward_model_steps)]


def train_seed(key, beta, k: int, config: Config) -> dict:
  """Probabilities ``[prompts, responses]`` of the reference, DPO and PPO policies."""
  num = config.num_prompts
  prompts, chosen, rejected, covered = cyclic_pairs(num, k)
  inputs = jnp.eye(num)  # one-hot prompts
  sizes = [num, *config.hidden, num]
  policy_key, reward_key = jax.random.split(key)
  optimizer = adam(config.learning_rate)
  logps_of = lambda params: jax.nn.log_softmax(mlp(params, inputs))  # [prompts, responses]

  sft = lambda params, _: sft_loss(logps_of(params), covered)[0]
  reference = fit(sft, init_mlp(policy_key, sizes, config.head_scale), optimizer,
                  config.sft_steps)
  ref_logps = logps_of(reference)
  pick = lambda logps: (logps[prompts, chosen], logps[prompts, rejected])

  dpo = lambda params, _: dpo_loss(*pick(logps_of(params)), *pick(ref_logps), beta=beta)[0]
  out = {"reference": jnp.exp(ref_logps),
         "dpo": jnp.exp(logps_of(fit(dpo, reference, optimizer, config.steps)))}
  reward_model = init_mlp(reward_key, sizes, config.head_scale)
  bradley_terry = lambda params, _: bradley_terry_loss(*pick(mlp(params, inputs)))[0]
  for rm_steps in sorted(config.reward_model_steps):
    scores = mlp(fit(bradley_terry, reward_model, optimizer, rm_steps), inputs)
    ppo = lambda params, _, scores=scores: kl_regularized_policy_loss(
        logps_of(params), ref_logps, scores, beta)[0]
    out[f"ppo_rm{rm_steps}"] = jnp.exp(logps_of(fit(ppo, reference, optimizer, config.steps)))
  return out


def policy_metrics(probs: np.ndarray, covered: np.ndarray, reference: np.ndarray) -> dict:
  """Per seed ``[S]``: uncovered mass, largest uncovered probability, gold reward, KL."""
  uncovered = np.where(covered, 0.0, probs)  # [S, prompts, responses]
  kl = (probs * (np.log(probs + 1e-30) - np.log(reference + 1e-30))).sum(-1)
  return {"uncovered_mass": uncovered.sum(-1).mean(-1),
          "max_uncovered": uncovered.max(-1).mean(-1),
          "gold_reward": np.diagonal(probs, axis1=-2, axis2=-1).mean(-1),
          "kl_to_reference": kl.mean(-1)}


def run_grid(config: Config) -> tuple[dict, dict]:
  """``{(beta, k): {policy: {metric: [seeds]}}}`` and the heat-map probabilities."""
  keys = jax.random.split(jax.random.key(config.seed), config.num_seeds)
  betas = jnp.asarray(config.betas)
  results, heatmaps = {}, {}
  for k in config.pairs_per_prompt:
    train = jax.vmap(jax.vmap(lambda key, beta: train_seed(key, beta, k, config), (None, 0)),
                     (0, None))
    trained = jax.jit(train)(keys, betas)  # {policy: [S, B, prompts, responses]}
    probs = {name: np.asarray(trained[name]) for name in policy_names(config)}
    covered = cyclic_pairs(config.num_prompts, k)[3]
    for b, beta in enumerate(config.betas):
      results[(beta, k)] = {name: policy_metrics(p[:, b], covered, probs["reference"][:, b])
                            for name, p in probs.items()}
      if (beta, k) == tuple(config.heatmap):
        heatmaps = {name: p[0, b] for name, p in probs.items()} | {"covered": covered}
  return results, heatmaps


def summarise(results: dict) -> dict:
  out = {}
  for (beta, k), policies in results.items():
    entry = {}
    for name, metrics in policies.items():
      entry[name] = {}
      for metric, values in metrics.items():
        mean, half = mean_interval(values)
        entry[name][metric] = {"mean": float(mean), "ci95": float(half)}
    drift = policies["dpo"]["uncovered_mass"] > policies["reference"]["uncovered_mass"]
    entry["seeds_dpo_uncovered_above_reference"] = int(drift.sum())
    for name in policies:
      if name.startswith("ppo"):
        wins = policies["dpo"]["uncovered_mass"] > policies[name]["uncovered_mass"]
        entry[f"seeds_dpo_uncovered_above_{name}"] = int(wins.sum())
    out[f"beta={beta},k={k}"] = entry
  return out


def plot(summary: dict, heatmaps: dict, config: Config):
  plt = pyplot()
  names = [n for n in heatmaps if n != "covered"]
  figure = plt.figure(figsize=(4 * len(names), 8))
  grid = figure.add_gridspec(2, len(names))
  beta, k = config.heatmap
  for col, name in enumerate(names):
    ax = figure.add_subplot(grid[0, col])
    image = ax.imshow(heatmaps[name], vmin=0, vmax=1, cmap="viridis")
    for i, j in zip(*np.nonzero(heatmaps["covered"])):
      ax.text(j, i, "w" if i == j else "l", ha="center", va="center", color="white", fontsize=8)
    ax.set_title(TITLES.get(name, name))
    ax.set_xlabel("response")
    ax.set_ylabel("prompt")
  figure.colorbar(image, ax=figure.axes, shrink=0.6, label="probability (w/l: covered)")
  figure.suptitle(f"pi(response | prompt), beta {beta}, k = {k} pairs per prompt, seed 0; "
                  "w/l: the chosen/rejected responses of the pairs, all others uncovered")
  ax = figure.add_subplot(grid[1, :])
  width = 0.8 / len(names)
  for n, name in enumerate(names):
    means = [e[name]["uncovered_mass"]["mean"] for e in summary.values()]
    errors = [e[name]["uncovered_mass"]["ci95"] for e in summary.values()]
    ax.bar(np.arange(len(summary)) + n * width, means, width, yerr=errors, label=name)
  ax.set_xticks(np.arange(len(summary)) + 0.4 - width / 2, list(summary))
  ax.set_ylabel("mass on uncovered responses")
  ax.set_title(f"mean over prompts; bars: mean and 95% interval over {config.num_seeds} seeds")
  ax.legend()
  return figure


def run(config: Config = Config()) -> dict:
  start = time.time()
  results, heatmaps = run_grid(config)
  summary = summarise(results)
  numbers = {"config": dataclasses.asdict(config), "grid": summary,
             "heatmap_seed0": {n: np.asarray(p).tolist() for n, p in heatmaps.items()}}
  numbers["runtime_s"] = time.time() - start
  numbers["output_dir"] = write_results(config.output_dir, numbers,
                                        plot(summary, heatmaps, config))
  print(report(numbers))
  return numbers


def report(numbers: dict) -> str:
  rows = []
  for setting, entry in numbers["grid"].items():
    for name, metrics in entry.items():
      if isinstance(metrics, dict):
        rows.append([setting, name] + [metrics[m]["mean"] for m in
                                       ("uncovered_mass", "max_uncovered", "gold_reward",
                                        "kl_to_reference")])
  table = format_table(["setting", "policy", "uncovered mass", "max uncovered", "gold reward",
                        "KL to ref"], rows)
  heat = numbers["heatmap_seed0"]
  covered = np.asarray(heat["covered"])
  largest = {n: float(np.where(covered, 0, np.asarray(p)).max()) for n, p in heat.items()
             if n != "covered"}
  return (f"means over {numbers['config']['num_seeds']} seeds and 8 prompts:\n{table}\n\n"
          f"largest uncovered probability in the heat maps (seed 0): {largest}\n"
          f"{numbers['runtime_s']:.1f} s; wrote {numbers['output_dir']}")


def main(argv=None):
  cli_main(__doc__, Config(), QUICK, run, argv)


if __name__ == "__main__":
  main()
