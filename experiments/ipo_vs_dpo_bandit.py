"""IPO vs DPO on a three-action bandit: Azar et al. 2023, Sec. 5.4 and Fig. 1.

Azar et al., "A General Theoretical Paradigm to Understand Learning from Human Preferences"
(arXiv 2310.12036). Actions {a, b, c}, policy ``pi = softmax(theta)``, ``theta`` in R^3 from 0,
uniform reference (so ``reference_free=True`` in the library losses: ``log pi_ref`` cancels).
Dataset D1 = {(a > b), (b > c), (a > c)}: every observed preference is deterministic. Adam
(lr 0.01) for 18,000 steps on minibatches of 9 pairs drawn from D1 with replacement; 10 seeds.

Claim: DPO drives the policy to the deterministic pi(a) = 1 for every tau (its loss only
vanishes as ``h -> infinity``), while IPO stays at a regularised fixed point. IPO's fixed
point is the least-squares solution of ``h(y_w, y_l) = 1 / (2 tau)`` over the observed pairs,
with ``h(y, y') = theta_y - theta_y'`` (uniform reference). For D1, with
``x = h_ab``, ``y = h_bc`` and ``h_ac = x + y``, minimising

  (x - c)^2 + (y - c)^2 + (x + y - c)^2,   c = 1 / (2 tau)

gives ``2x + y = 2c`` and ``x + 2y = 2c``, so ``h_ab = h_bc = 2c / 3 = 1 / (3 tau)`` and
``h_ac = 2 / (3 tau)``: ``pi ∝ (e^{1/(3 tau)}, 1, e^{-1/(3 tau)})``. With two actions and
p(y1 > y2) = 1 the same reasoning gives ``pi(y1) = sigmoid(1 / (2 tau))`` (Azar et al. Sec. 5).

Run: ``python -m experiments.ipo_vs_dpo_bandit`` (``--quick`` for the reduced test setting).
"""

from __future__ import annotations

import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from experiments._common import (adam, cli_main, fit, format_table, mean_interval, pyplot,
                                 write_results)
from jaxalign.losses import dpo_loss, ipo_loss

ACTIONS = ("a", "b", "c")
D1 = ((0, 1), (1, 2), (0, 2))  # (chosen, rejected): a > b, b > c, a > c
TWO_ACTIONS = ((0, 1),)  # y1 > y2 with probability 1
LOSSES = {"DPO": dpo_loss, "IPO": ipo_loss}


@dataclasses.dataclass(frozen=True)
class Config:
  taus: tuple[float, ...] = (0.1, 0.5, 1.0)
  steps: int = 18_000
  batch_size: int = 9
  learning_rate: float = 0.01
  num_seeds: int = 10
  record_every: int = 100
  seed: int = 0
  output_dir: str = "results/ipo_vs_dpo_bandit"


QUICK = Config(steps=3000, num_seeds=3, output_dir="results/ipo_vs_dpo_bandit_quick")


def ipo_fixed_point(pairs, tau: float, num_actions: int) -> np.ndarray:
  """IPO's minimiser: ``pi = softmax(theta)``, ``theta`` the least-squares solution of
  ``theta_w - theta_l = 1 / (2 tau)`` over ``pairs`` (uniform reference)."""
  design = np.zeros((len(pairs), num_actions))
  for row, (chosen, rejected) in enumerate(pairs):
    design[row, chosen], design[row, rejected] = 1.0, -1.0
  theta = np.linalg.lstsq(design, np.full(len(pairs), 1.0 / (2.0 * tau)), rcond=None)[0]
  return np.exp(theta - theta.max()) / np.exp(theta - theta.max()).sum()


def train_curves(loss_fn, pairs, config: Config):
  """Action probabilities every ``record_every`` steps: ``[seeds, taus, records, actions]``."""
  pairs = jnp.asarray(pairs)  # [P, 2]
  num_actions = 3 if len(pairs) > 1 else 2

  def train(key, tau):
    def loss(theta, step_key):
      index = jax.random.randint(step_key, (config.batch_size,), 0, pairs.shape[0])  # [9]
      logps = jax.nn.log_softmax(theta)
      return loss_fn(logps[pairs[index, 0]], logps[pairs[index, 1]], beta=tau,
                     reference_free=True)[0]

    _, probs = fit(loss, jnp.zeros(num_actions), adam(config.learning_rate), config.steps,
                   key=key, record_fn=jax.nn.softmax, record_every=config.record_every)
    return probs

  keys = jax.random.split(jax.random.key(config.seed), config.num_seeds)
  taus = jnp.asarray(config.taus)
  return np.asarray(jax.jit(jax.vmap(jax.vmap(train, (None, 0)), (0, None)))(keys, taus))


def summarise(curves: dict, pairs, config: Config) -> dict:
  """Final probabilities (mean, 95% t-interval over seeds) and IPO's closed form, per tau."""
  out = {}
  for t, tau in enumerate(config.taus):
    entry = {"ipo_closed_form": ipo_fixed_point(pairs, tau, curves["IPO"].shape[-1]).tolist()}
    for name, probs in curves.items():
      mean, half = mean_interval(probs[:, t, -1])
      entry[name.lower()] = {"mean": mean.tolist(), "ci95": half.tolist()}
    out[str(tau)] = entry
  return out


def plot(curves: dict, config: Config):
  plt = pyplot()
  figure, axes = plt.subplots(2, len(config.taus), figsize=(4 * len(config.taus), 6),
                              sharex=True, sharey=True, squeeze=False)
  steps = (np.arange(curves["DPO"].shape[2]) + 1) * config.record_every
  for row, (name, probs) in enumerate(curves.items()):
    for col, tau in enumerate(config.taus):
      ax = axes[row, col]
      mean, half = mean_interval(probs[:, col], axis=0)  # [records, 3]
      closed = ipo_fixed_point(D1, tau, 3)
      for action, color in zip(range(3), ("C0", "C1", "C2")):
        ax.plot(steps, mean[:, action], color=color, label=f"pi({ACTIONS[action]})")
        ax.fill_between(steps, mean[:, action] - half[:, action],
                        mean[:, action] + half[:, action], color=color, alpha=0.25)
        if name == "IPO":
          ax.axhline(closed[action], color=color, linestyle="--", linewidth=1)
      ax.set_title(f"{name}, tau = {tau}")
      ax.set_ylim(-0.02, 1.02)
      ax.xaxis.set_major_formatter(lambda x, _: f"{x / 1000:g}k")
      if row == 1:
        ax.set_xlabel("step")
    axes[row, 0].set_ylabel("action probability")
  axes[0, 0].legend(loc="center right")
  figure.suptitle("D1 = {a>b, b>c, a>c}: mean and 95% interval over "
                  f"{config.num_seeds} seeds; dashed: IPO's closed form")
  figure.tight_layout()
  return figure


def run(config: Config = Config()) -> dict:
  start = time.time()
  curves = {name: train_curves(fn, D1, config) for name, fn in LOSSES.items()}
  two = {name: train_curves(fn, TWO_ACTIONS, config) for name, fn in LOSSES.items()}
  numbers = {"config": dataclasses.asdict(config), "d1": summarise(curves, D1, config),
             "two_actions": summarise(two, TWO_ACTIONS, config)}
  numbers["runtime_s"] = time.time() - start
  numbers["output_dir"] = write_results(config.output_dir, numbers, plot(curves, config))
  print(report(numbers))
  return numbers


def report(numbers: dict) -> str:
  fmt = lambda e: "/".join(f"{p:.3f}" for p in e)
  rows = []
  for tau, entry in numbers["d1"].items():
    rows.append([tau, fmt(entry["dpo"]["mean"]), fmt(entry["ipo"]["mean"]),
                 fmt(entry["ipo"]["ci95"]), fmt(entry["ipo_closed_form"])])
  lines = ["D1, final pi(a)/pi(b)/pi(c), mean over seeds:",
           format_table(["tau", "DPO", "IPO", "IPO 95% +-", "IPO closed form"], rows), "",
           "two actions, p(y1 > y2) = 1, final pi(y1):"]
  rows = [[tau, e["dpo"]["mean"][0], e["ipo"]["mean"][0], e["ipo_closed_form"][0]]
          for tau, e in numbers["two_actions"].items()]
  lines.append(format_table(["tau", "DPO", "IPO", "sigmoid(1/(2 tau))"], rows))
  lines.append(f"\n{numbers['runtime_s']:.1f} s; wrote {numbers['output_dir']}")
  return "\n".join(lines)


def main(argv=None):
  cli_main(__doc__, Config(), QUICK, run, argv)


if __name__ == "__main__":
  main()
