"""Out-of-preference prompts help a reward model's policy: Li, Xu, Yu 2023, Sec. 5.

Li, Xu, Yu, "Policy Optimization in RLHF: The Impact of Out-of-preference Data" (arXiv
2312.10584; code: liziniu/policy_optimization). From n preference pairs ``(s, a_w, a_l)``,
labelled ``P(a_0 > a_1) = sigmoid(r*(s, a_0) - r*(s, a_1))`` for two distinct uniform actions:

- DPO: library ``dpo_loss`` on the pairs, uniform reference (``reference_free=True``).
- RMB-PO: a reward model fit by logistic MLE (library ``bradley_terry_loss``), then the policy
  maximises ``E_s E_{a~pi}[r_hat(s, a)] - beta KL(pi(.|s) || uniform)`` over the n preference
  states, exactly over the actions (``_common.kl_regularized_policy_loss``).
- RMB-PO+: the same objective over the preference states plus ``ratio * n`` fresh states that
  have no preference label (out-of-preference data).

Metric: the optimality gap ``J(pi*) - J(pi)``, ``J(pi) = E_s sum_a pi(a|s) r*(s, a)`` on a fixed
test set of states, ``pi*`` the greedy policy on ``r*``; mean and standard error over seeds.
The paper's claim: DPO > RMB-PO >= RMB-PO+ in gap (their neural-bandit numbers, as quoted in
issue 8: 0.435, 0.323, 0.197 / 0.192 / 0.186).

Budgets (docs/reproductions.md): the library's Adam with the same full-batch step budget for
every method ("linear", "neural, equal budget"), or the reference code's own optimisation:
for the linear bandit ("linear, reference-code budget"; experiments/run_linear_bandit.py and
scripts/run_linear_bandit.sh there) 200 DPO and 1,000 policy-gradient iterations, full batch,
each with the AdaGrad-norm step ``x <- x - g_t / sqrt(sum_{s<=t} ||g_s||^2)``
(``--dpo_adaptive --pg_adaptive``, ada_coef 1), and the reward model's exact logistic MLE
(cvxpy / ECOS there, Newton's method here); for the neural bandit ("neural, reference-code
budget") 20 reward-model steps and 50 epochs of minibatches of 64, which give RMB-PO+ more
steps. DPO is on log-probabilities everywhere (the reference neural DPO takes
``distributions[...]``, probabilities, where its names say log-probs).

Run: ``python -m experiments.out_of_preference`` (``--quick`` for the reduced test setting).
"""

from __future__ import annotations

import dataclasses
import time
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax

from experiments import _linear_bandit, _neural_bandit
from experiments._common import (adam, cli_main, fit, format_table,
                                 kl_regularized_policy_loss, mean_sem, pyplot, write_results)
from jaxalign.losses import bradley_terry_loss, dpo_loss

BANDITS = {"linear": _linear_bandit, "neural": _neural_bandit}
CLASS_OPTIMUM_STATES = 1000


@dataclasses.dataclass(frozen=True)
class Setting:
  """One bandit and one training budget.

  ``policy_epochs=None``: every policy gets ``policy_steps`` full-batch steps (DPO:
  ``dpo_steps`` when set). Otherwise the reference code's neural budget: ``policy_epochs``
  passes over the training states in minibatches of ``batch_size``, so a method with more
  states (RMB-PO+) also gets more steps. ``optimizer="adagrad_norm"`` is the reference code's
  linear-bandit step rule (``adagrad_norm``, learning rates unused); ``reward_model_fit=
  "exact"`` fits the (convex, linear) reward model to its logistic MLE by Newton's method.
  """
  name: str
  bandit: str
  num_pairs: int
  extra_ratios: tuple[float, ...]  # RMB-PO+: ratio * num_pairs unlabelled states
  beta: float = 0.01
  reward_model_steps: int = 1000
  policy_steps: int = 1000
  policy_epochs: int | None = None
  batch_size: int = 64
  record_every: int = 50  # gap curve during policy optimisation (full-batch budget)
  num_curve_states: int = 2000
  class_optimum: bool = True  # also train the "best in class" reference policy
  step_control: bool = True  # epoch budget: also RMB-PO with the largest RMB-PO+'s steps
  reward_model_lr: float = 1e-3
  policy_lr: float = 1e-3
  num_test_states: int = 10_000
  optimizer: str = "adam"  # or "adagrad_norm" (the reference code's linear-bandit rule)
  ada_coef: float = 1.0  # adagrad_norm's step coefficient (the reference code's default)
  dpo_steps: int | None = None  # DPO's full-batch steps; None: policy_steps
  reward_model_fit: str = "adam"  # or "exact": Newton's method to the logistic MLE
  newton_steps: int = 50


@dataclasses.dataclass(frozen=True)
class Config:
  settings: tuple[Setting, ...] = (
      Setting("linear", "linear", 20, (0.5, 10.0), reward_model_lr=0.1, policy_lr=0.1,
              policy_steps=5000),
      Setting("linear, reference-code budget", "linear", 20, (0.5, 10.0),
              optimizer="adagrad_norm", dpo_steps=200, policy_steps=1000,
              reward_model_fit="exact", record_every=20),
      Setting("neural, equal budget", "neural", 50, (0.5, 2.0, 5.0, 10.0),
              reward_model_steps=300, policy_steps=500, num_test_states=5000),
      Setting("neural, reference-code budget", "neural", 50, (0.5, 2.0, 5.0, 10.0),
              reward_model_steps=20, policy_epochs=50, num_test_states=5000),
  )
  num_seeds: int = 10
  seed: int = 0
  output_dir: str = "results/out_of_preference"


QUICK = Config(settings=(
    Setting("linear", "linear", 20, (10.0,), reward_model_lr=0.1, policy_lr=0.1,
            policy_steps=5000, record_every=250, class_optimum=False),
    Setting("linear, reference-code budget", "linear", 20, (10.0,), optimizer="adagrad_norm",
            dpo_steps=200, policy_steps=1000, reward_model_fit="exact", record_every=100,
            class_optimum=False),
    Setting("neural, reference-code budget", "neural", 50, (2.0,), reward_model_steps=20,
            policy_epochs=50, num_test_states=1000, class_optimum=False,
            step_control=False),),
    num_seeds=6, output_dir="results/out_of_preference_quick")


def make_bandit(name: str, key) -> types.SimpleNamespace:
  """The bandit's functions, with the true reward's parameters drawn from ``key``."""
  module = BANDITS[name]
  if name == "neural":
    true_params = module.init_true_reward(key)
    true_rewards = lambda states: module.true_rewards(true_params, states)
  else:
    true_rewards = module.true_rewards
  return types.SimpleNamespace(
      true_rewards=true_rewards, sample_states=module.sample_states,
      init_policy=module.init_policy, policy_logps=module.policy_logps,
      init_reward_model=module.init_reward_model, scores=module.reward_model_scores,
      num_actions=module.NUM_ACTIONS)


def preference_pairs(bandit, key, num: int):
  """``(states, chosen, rejected)``: distinct uniform actions, Bradley-Terry labels."""
  state_key, first_key, shift_key, label_key = jax.random.split(key, 4)
  states = bandit.sample_states(state_key, num)
  first = jax.random.randint(first_key, (num,), 0, bandit.num_actions)
  shift = jax.random.randint(shift_key, (num,), 1, bandit.num_actions)
  second = (first + shift) % bandit.num_actions
  rewards = bandit.true_rewards(states)  # [n, A]
  rows = jnp.arange(num)
  margin = rewards[rows, first] - rewards[rows, second]
  first_wins = jax.random.bernoulli(label_key, jax.nn.sigmoid(margin))
  return (states, jnp.where(first_wins, first, second), jnp.where(first_wins, second, first))


def adagrad_norm(coef: float) -> optax.GradientTransformation:
  """The reference code's linear-bandit step rule (``is_adaptive``): one scalar accumulator
  over all parameters, ``x <- x - coef * g_t / sqrt(sum_{s<=t} ||g_s||^2)`` (AdaGrad-norm)."""

  def init(params):
    del params
    return jnp.zeros([], jnp.float32)

  def update(grads, total, params=None):
    del params
    total = total + sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(grads))
    scale = -coef / jnp.sqrt(total)
    return jax.tree_util.tree_map(lambda g: scale * g, grads), total

  return optax.GradientTransformation(init, update)


def optimizer_for(setting: Setting, learning_rate: float) -> optax.GradientTransformation:
  if setting.optimizer == "adagrad_norm":
    return adagrad_norm(setting.ada_coef)
  if setting.optimizer != "adam":
    raise ValueError(f"unknown optimizer {setting.optimizer!r}: adam or adagrad_norm")
  return adam(learning_rate)


def newton_minimize(loss_fn, params, steps: int):
  """``steps`` Newton steps with a backtracking (Armijo) line search on a smooth convex
  ``loss_fn`` of a parameter vector: its minimiser when one exists (the logistic MLE of the
  reference code's cvxpy solve). Returns ``(params, gradient norm at the end)``."""
  halvings = 0.5 ** jnp.arange(40)

  def step(x, _):
    value, gradient = jax.value_and_grad(loss_fn)(x)
    hessian = jax.hessian(loss_fn)(x)
    direction = -jnp.linalg.solve(hessian + 1e-12 * jnp.eye(x.shape[0]), gradient)
    trials = jax.vmap(lambda t: loss_fn(x + t * direction))(halvings)
    good = trials <= value + 1e-4 * halvings * (gradient @ direction)
    t = jnp.where(good.any(), halvings[jnp.argmax(good)], 0.0)
    return x + t * direction, None

  params = jax.lax.scan(step, params, None, length=steps)[0]
  return params, jnp.linalg.norm(jax.grad(loss_fn)(params))


def pair_values(table, chosen, rejected):
  """``table [n, A]`` at the chosen and at the rejected action of each pair: two ``[n]``."""
  rows = jnp.arange(table.shape[0])
  return table[rows, chosen], table[rows, rejected]


def train_policy(objective, start, setting: Setting, num_states: int, key, record_fn,
                 budget_states: int | None = None, steps: int | None = None):
  """Optimise ``objective(params, rows)`` (``rows``: indices of the training states).

  In the full-batch budget ``steps`` steps (default ``policy_steps``); in the epoch budget the
  step count is that of ``budget_states`` states (default: the training states). Returns
  ``(params, curve)``: ``record_fn(params)`` every ``record_every`` steps in the full-batch
  budget, ``None`` in the epoch budget.
  """
  optimizer = optimizer_for(setting, setting.policy_lr)
  if setting.policy_epochs is None:
    full = jnp.arange(num_states)
    return fit(lambda params, _: objective(params, full), start, optimizer,
               steps or setting.policy_steps, record_fn=record_fn,
               record_every=setting.record_every)
  batch = min(setting.batch_size, num_states)
  steps = setting.policy_epochs * -(-(budget_states or num_states) // setting.batch_size)
  minibatch = lambda step_key: jax.random.permutation(step_key, num_states)[:batch]
  return fit(lambda params, step_key: objective(params, minibatch(step_key)), start,
             optimizer, steps, key=key), None


def optimality_gap(logps, rewards) -> jax.Array:
  """``J(pi*) - J(pi)`` on a test set: ``mean_s [max_a r* - sum_a pi r*]``."""
  return jnp.mean(rewards.max(-1) - (jnp.exp(logps) * rewards).sum(-1))


def run_seed(key, setting: Setting) -> dict:
  """Gaps of DPO, RMB-PO and RMB-PO+ (per ratio) for one seed (one bandit, one dataset)."""
  env_key, data_key, policy_key, rm_key, extra_key, test_key = jax.random.split(key, 6)
  bandit = make_bandit(setting.bandit, env_key)
  states, chosen, rejected = preference_pairs(bandit, data_key, setting.num_pairs)
  start = bandit.init_policy(policy_key)
  order_key = jax.random.fold_in(policy_key, 1)  # minibatch order, shared by the methods
  test_states = bandit.sample_states(test_key, setting.num_test_states)
  test_rewards = bandit.true_rewards(test_states)
  gap_of = lambda p, n=None: optimality_gap(bandit.policy_logps(p, test_states[:n]),
                                           test_rewards[:n])
  curve_gap = lambda p: gap_of(p, setting.num_curve_states)
  train = lambda objective, num, budget=None, steps=None: train_policy(
      objective, start, setting, num, order_key, curve_gap, budget, steps)

  dpo = lambda params, rows: dpo_loss(
      *pair_values(bandit.policy_logps(params, states[rows]), chosen[rows], rejected[rows]),
      beta=setting.beta, reference_free=True)[0]
  policies = {"DPO": train(dpo, setting.num_pairs, steps=setting.dpo_steps)}
  if setting.dpo_steps and setting.dpo_steps != setting.policy_steps and setting.step_control:
    policies[f"DPO, {setting.policy_steps} steps"] = train(dpo, setting.num_pairs)

  bt = lambda params, _=None: bradley_terry_loss(
      *pair_values(bandit.scores(params, states), chosen, rejected))[0]
  extra_numbers = {}
  if setting.reward_model_fit == "exact":
    if setting.bandit != "linear":
      raise ValueError("reward_model_fit='exact' needs the (convex) linear reward model")
    reward_model, extra_numbers["reward model gradient norm"] = newton_minimize(
        bt, bandit.init_reward_model(rm_key), setting.newton_steps)
  else:
    reward_model = fit(bt, bandit.init_reward_model(rm_key),
                       optimizer_for(setting, setting.reward_model_lr),
                       setting.reward_model_steps)

  def rmb_po(train_states, score=lambda x: bandit.scores(reward_model, x), budget=None):
    rewards = score(train_states)  # [S, A], fixed
    uniform = jnp.full(rewards.shape, -jnp.log(bandit.num_actions))
    objective = lambda params, rows: kl_regularized_policy_loss(
        bandit.policy_logps(params, train_states[rows]), uniform[rows], rewards[rows],
        setting.beta)[0]
    return train(objective, train_states.shape[0], budget)

  policies["RMB-PO"] = rmb_po(states)
  counts = [int(round(ratio * setting.num_pairs)) for ratio in setting.extra_ratios]
  extra = bandit.sample_states(extra_key, max(counts + [CLASS_OPTIMUM_STATES]))  # nested sets
  for ratio, count in zip(setting.extra_ratios, counts):
    policies[f"RMB-PO+ (1:{ratio:g})"] = rmb_po(jnp.concatenate([states, extra[:count]]))
  if setting.policy_epochs is not None and setting.step_control:
    most = setting.num_pairs + max(counts)
    policies[f"RMB-PO, steps of 1:{max(setting.extra_ratios):g}"] = rmb_po(states, budget=most)
  if setting.class_optimum:  # the policy class's own limit: the true reward, many states
    policies["best in class"] = rmb_po(extra[:CLASS_OPTIMUM_STATES], bandit.true_rewards)

  gaps = {name: gap_of(params) for name, (params, _) in policies.items()}
  greedy = jax.nn.one_hot(bandit.scores(reward_model, test_states).argmax(-1),
                          bandit.num_actions)
  gaps["greedy on reward model"] = jnp.mean(test_rewards.max(-1) - (greedy * test_rewards).sum(-1))
  gaps["uniform"] = jnp.mean(test_rewards.max(-1) - test_rewards.mean(-1))
  curves = {name: curve for name, (_, curve) in policies.items() if curve is not None}
  return gaps, curves, extra_numbers


def run_setting(setting: Setting, config: Config) -> dict:
  # the same seeds (bandits, datasets, inits) for every setting of one bandit
  bandit_index = list(BANDITS).index(setting.bandit)
  keys = jax.random.split(jax.random.fold_in(jax.random.key(config.seed), bandit_index),
                          config.num_seeds)
  gaps, curves, extra = jax.jit(jax.vmap(lambda key: run_seed(key, setting)))(keys)
  out = {"gaps": {}, "curves": {}}
  for name, values in extra.items():  # e.g. the exact MLE's final gradient norm per seed
    out[name] = {"max": float(np.max(values)), "seeds": np.asarray(values).tolist()}
  for name, values in gaps.items():
    mean, sem = mean_sem(values)
    out["gaps"][name] = {"mean": float(mean), "sem": float(sem),
                         "seeds": np.asarray(values).tolist()}
  largest = f"RMB-PO+ (1:{max(setting.extra_ratios):g})"
  seeds = lambda better, worse: int((np.asarray(gaps[better]) < np.asarray(gaps[worse])).sum())
  out["paired"] = {f"{largest} below DPO": seeds(largest, "DPO"),
                   f"{largest} below RMB-PO": seeds(largest, "RMB-PO"),
                   "RMB-PO below DPO": seeds("RMB-PO", "DPO")}
  for name, values in curves.items():  # [seeds, records]
    mean, sem = mean_sem(values)
    steps = ((np.arange(len(mean)) + 1) * setting.record_every).tolist()
    out["curves"][name] = {"mean": mean.tolist(), "sem": sem.tolist(), "steps": steps}
  return out


METHOD_ORDER = ("uniform", "DPO", "RMB-PO")
REFERENCE_ROWS = ("uniform", "greedy on reward model", "best in class")


def is_control(name: str) -> bool:
  """A row that changes only a method's step count (RMB-PO with RMB-PO+'s steps, DPO with the
  policy gradient's)."""
  return name.startswith("RMB-PO, steps of") or name.startswith("DPO, ")


def ordered(gaps: dict) -> list[str]:
  first = [m for m in METHOD_ORDER if m in gaps]
  plus = sorted((m for m in gaps if m.startswith("RMB-PO+")),
                key=lambda m: float(m.split(":")[1][:-1]))
  return first + plus + [m for m in gaps if m not in first and m not in plus]


def plot(results: dict):
  plt = pyplot()
  figure, axes = plt.subplots(2, len(results), figsize=(5.5 * len(results), 8), squeeze=False)
  for col, (setting, result) in enumerate(results.items()):
    gaps, ax = result["gaps"], axes[0, col]
    names = [m for m in ordered(gaps) if m not in REFERENCE_ROWS]
    colors = ["C3", "C0"] + ["C7" if is_control(m) else "C2" for m in names[2:]]
    ax.bar(range(len(names)), [gaps[m]["mean"] for m in names],
           yerr=[gaps[m]["sem"] for m in names], color=colors)
    ax.set_xticks(range(len(names)), names, rotation=20)
    if "best in class" in gaps:
      ax.axhline(gaps["best in class"]["mean"], color="k", linestyle=":", label="best in class")
    ax.axhline(gaps["greedy on reward model"]["mean"], color="C1", linestyle="--",
               label="greedy on reward model")
    ax.set_ylabel("optimality gap J(pi*) - J(pi)")
    ax.set_title(f"{setting}: final gap (mean, s.e.)", fontsize=10)
    ax.legend(fontsize=8)
    ax = axes[1, col]
    curves = result["curves"]
    if not curves:
      ax.axis("off")
      ax.text(0.5, 0.5, "no curve: the methods run different step counts\n"
              "(minibatch epochs of the reference code)", ha="center", transform=ax.transAxes)
      continue
    for name in ordered(curves):
      mean, sem = np.asarray(curves[name]["mean"]), np.asarray(curves[name]["sem"])
      style = ":" if name == "best in class" else "-"
      steps = curves[name]["steps"]
      ax.plot(steps, mean, style, label=name)
      ax.fill_between(steps, mean - sem, mean + sem, alpha=0.2)
    ax.set_xscale("log")
    rule = "AdaGrad-norm" if "reference-code" in setting else "Adam"
    ax.set_xlabel(f"policy optimisation step ({rule}, full batch)")
    ax.set_ylabel("gap on held-out states")
    ax.legend(fontsize=8)
  figure.tight_layout()
  return figure


def run(config: Config = Config()) -> dict:
  start = time.time()
  results = {s.name: run_setting(s, config) for s in config.settings}
  numbers = {"config": dataclasses.asdict(config), "settings": results,
             "runtime_s": time.time() - start}
  numbers["output_dir"] = write_results(config.output_dir, numbers, plot(results))
  print(report(numbers))
  return numbers


def report(numbers: dict) -> str:
  lines = []
  for setting, result in numbers["settings"].items():
    gaps = result["gaps"]
    rows = [[m, gaps[m]["mean"], gaps[m]["sem"]] for m in ordered(gaps)]
    paired = ", ".join(f"{k}: {v}" for k, v in result["paired"].items())
    lines += [f"{setting}: optimality gap over {numbers['config']['num_seeds']} seeds:",
              format_table(["method", "gap", "s.e."], rows),
              f"seeds with a smaller gap: {paired}", ""]
  lines.append(f"{numbers['runtime_s']:.1f} s; wrote {numbers['output_dir']}")
  return "\n".join(lines)


def main(argv=None):
  cli_main(__doc__, Config(), QUICK, run, argv)


if __name__ == "__main__":
  main()
