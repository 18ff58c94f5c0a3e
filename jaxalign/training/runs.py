"""``run_training(config)``: one offline run (SFT, reward model or DPO family) end to end.

Writes under ``config.output_dir``: ``config.yaml`` (resolved), ``metrics.jsonl`` and
TensorBoard events, ``checkpoints/`` (resumed from automatically), ``model/`` (the final
params, ``jaxalign.models.load_model``), ``eval.json`` and ``data_report.json``.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign import data as D
from jaxalign.checkpoint import Checkpointer
from jaxalign.config import RunConfig, save_config
from jaxalign.models import ScalarHead, count_params, save_model
from jaxalign.parallel import (initialize_distributed, is_main_process, make_mesh, on_mesh,
                               param_placer, shard_batch, shard_global_batch, shard_params,
                               to_host)
from jaxalign.training import setup
from jaxalign.training.loop import Throughput, fit
from jaxalign.training.metrics_log import MetricsLogger, to_floats
from jaxalign.training.online_dpo import (OnlineRefresher, SwappableBatches,
                                          check_online_config, is_offline, online_reference,
                                          reward_model_extras)
from jaxalign.training.objectives import (PreferenceObjective, RewardModelObjective,
                                          SFTObjective, reference_logps_fn)
from jaxalign.training.optim import make_optimizer
from jaxalign.training.preference_losses import preference_loss
from jaxalign.training.state import TrainState
from jaxalign.training.step import make_eval_step, make_train_step

_LOSS_KNOBS = {"cdpo": ("label_smoothing",), "robust": ("label_smoothing",),
               "simpo": ("gamma",), "rpo": ("alpha",)}


def make_objective(run: RunConfig, config):
  if run.task == "sft":
    return SFTObjective(config)
  if run.task == "rm":
    return RewardModelObjective(config)
  knobs = {k: getattr(run.loss, k) for k in _LOSS_KNOBS.get(run.loss.name, ())}
  spec = preference_loss(run.loss.name, beta=run.loss.beta, **knobs)
  return PreferenceObjective(config, spec.loss_term, average_logps=spec.average_logps,
                             needs_reference=spec.needs_reference)


def reward_model_params(config, policy_params, seed: int) -> dict:
  """A reward model on the policy's backbone (LM head dropped) with a fresh score head."""
  backbone = {k: v for k, v in policy_params.items() if k != "lm_head"}
  head = ScalarHead().init(jax.random.PRNGKey(seed), jnp.zeros((1, config.embed_dim)))
  return {"backbone": backbone, "score": head["params"]}


class CachedReference:
  """Rows plus reference log-probs computed once, attached to every batch they yield."""

  def __init__(self, rows, chosen: np.ndarray, rejected: np.ndarray):
    self.rows, self.chosen, self.rejected = rows, chosen, rejected
    self.max_length = rows.max_length

  def __len__(self):
    return len(self.rows)

  def lengths(self):
    return self.rows.lengths()

  def batch(self, indices, length):
    arrays = setup.batch_arrays(self.rows.batch(indices, length))
    return dict(arrays, ref_chosen_logps=self.chosen[indices],
                ref_rejected_logps=self.rejected[indices])


def precompute_reference(objective, ref_params, rows, batch_size: int, mesh) -> CachedReference:
  compute = reference_logps_fn(objective)
  chosen, rejected = [], []
  for start in range(0, len(rows), batch_size):
    indices = np.arange(start, min(start + batch_size, len(rows)))
    padded = np.resize(indices, batch_size)  # static shape; extra rows dropped below
    # Every process holds the whole global batch here (not its own rows), and every
    # process needs every row's log-probs (its later training rows may be any of them).
    batch = shard_global_batch(setup.batch_arrays(rows.batch(padded, rows.max_length)), mesh)
    c, r = to_host(compute(ref_params, batch))
    chosen.append(c[:len(indices)])
    rejected.append(r[:len(indices)])
  return CachedReference(rows, np.concatenate(chosen), np.concatenate(rejected))


def make_evaluator(objective, rows, ref_params, batch_size: int, mesh):
  """``evaluate(params)``: metrics over the held-out rows (batch means weighted by size)."""
  evaluate_batch = make_eval_step(objective)
  batch_size = min(batch_size, len(rows))
  usable = len(rows) - len(rows) % batch_size

  def evaluate(params):
    totals, count = {}, 0
    for start in range(0, usable, batch_size):
      indices = np.arange(start, start + batch_size)
      batch = shard_global_batch(setup.batch_arrays(rows.batch(indices, rows.max_length)), mesh)
      metrics = to_floats(to_host(evaluate_batch(params, ref_params, batch)))
      for k, v in metrics.items():
        totals[k] = totals.get(k, 0.0) + v * batch_size
      count += batch_size
    return {k: v / count for k, v in totals.items()}
  return evaluate


def _tokens_per_batch(run: RunConfig, rows) -> int:
  lengths = np.asarray(rows.lengths(), np.float64)
  per_row = lengths.mean() * (1 if run.task == "sft" else 2)
  return int(per_row * run.data.batch_size)


def _build_rows(run: RunConfig, split: str, main: bool):
  """``setup.build_rows``; with data files on several processes, process 0 builds the TFDS
  dataset under ``output_dir/tfds`` first and the others then reuse it (shared storage such
  as gs://) or build their own copy (a disk per host), instead of all racing to write it."""
  if run.data.source != "files" or jax.process_count() == 1:
    return setup.build_rows(run, split)
  from jax.experimental import multihost_utils
  result = setup.build_rows(run, split) if main else None
  multihost_utils.sync_global_devices(f"jaxalign: {split} dataset built")
  return result if main else setup.build_rows(run, split)


def run_training(run: RunConfig, progress: bool = True) -> dict:
  """Trains per ``run``; resumes from ``output_dir/checkpoints`` if present. Returns the
  final eval metrics."""
  online = run.task == "online-dpo"
  refreshing = online and not is_offline(run)
  if online:  # before anything is built or written
    check_online_config(run)
  initialize_distributed()
  mesh = make_mesh(run.mesh)
  main = is_main_process()
  if main:
    save_config(run, os.path.join(run.output_dir, "config.yaml"))
  if refreshing:  # pairs come from the policy; the prompts are the data
    train_rows, train_report = setup.build_prompt_rows(run, "train", run.online.max_new_tokens)
  else:
    train_rows, train_report = _build_rows(run, "train", main)
  eval_rows, eval_report = _build_rows(run, "eval", main)
  if main:
    with open(os.path.join(run.output_dir, "data_report.json"), "w") as f:
      json.dump({"train": train_report.to_dict(), "eval": eval_report.to_dict()}, f, indent=2)
    describe = lambda rows, report: (f"{len(rows)} rows" + (f" ({report.summary()})"
                                                            if report.num_rows else ""))
    print(f"data: train {describe(train_rows, train_report)}; "
          f"eval {describe(eval_rows, eval_report)}")

  config, policy = setup.load_policy(run, setup.vocab_overrides(run),
                                     place=param_placer(mesh))
  objective = make_objective(run, config)
  ref_params = None
  if run.task == "rm":
    params = reward_model_params(config, policy, run.seed)
  else:
    params = policy
    if run.task in ("dpo", "online-dpo") and objective.needs_reference:
      ref_params = shard_params(setup.load_reference(run, policy), mesh)
  params = shard_params(params, mesh)
  tx = make_optimizer(run.optimizer)
  # Online runs keep the reference in the state: it may move, and a checkpoint must hold it.
  # The state gets its own copy: the step donates the state's buffers.
  in_step_ref = (setup.copy_tree(ref_params) if ref_params is not None and
                 (run.loss.reference == "in_step" or online) else None)
  if online and in_step_ref is not None:
    in_step_ref = online_reference(run, in_step_ref)  # float32 for an EMA reference
  extras = None
  rm = None
  if online and run.online.reward_model:
    rm = setup.load_reward_model(run.online.reward_model)
    # The reward model and, when it is retrained, its optimizer state: in the checkpoint.
    extras = reward_model_extras(run, shard_params(rm[1], mesh))
  state = on_mesh(TrainState.create(params, tx, run.seed, ref_params=in_step_ref,
                                    extras=extras), mesh)
  state_shardings = jax.tree_util.tree_map(lambda x: x.sharding, state)

  cached = ref_params is not None and run.loss.reference == "cached"
  def with_reference(rows, current_state):
    if not cached:
      return rows
    return precompute_reference(objective, current_state.ref_params if online else ref_params,
                                rows, run.data.eval_batch_size, mesh)

  before_step = None
  if refreshing:
    batches = SwappableBatches()
    gold = setup.synthetic_task(run).gold_reward if run.data.source == "synthetic" else None
    before_step = OnlineRefresher(run, config, objective, train_rows, batches, with_reference,
                                  rm=rm, gold_reward=gold, mesh=mesh)
  else:
    batches = D.BatchIterator(with_reference(train_rows, state), run.data.batch_size,
                              seed=run.seed, process_index=jax.process_index(),
                              process_count=jax.process_count())
  checkpointer = None
  if run.loop.checkpoint_every:
    checkpointer = Checkpointer(os.path.join(run.output_dir, "checkpoints"),
                                save_every=run.loop.checkpoint_every,
                                keep=run.loop.keep_checkpoints, best_metric=run.loop.best_metric)
    if checkpointer.latest_step() is not None:
      state, data_state = checkpointer.restore(state)
      if data_state and not refreshing:  # a refreshing run regenerates its pairs
        batches.set_state(data_state)
      if main:
        print(f"resumed from step {int(state.step)}")
  step_fn = make_train_step(objective, micro_batches=run.loop.micro_batches,
                            state_shardings=state_shardings)
  # Held-out implicit rewards are measured against the initial (SFT) reference.
  evaluate = make_evaluator(objective, eval_rows, ref_params, run.data.eval_batch_size, mesh)
  tokens = _tokens_per_batch(run, train_rows)
  n_params = count_params(policy)
  throughput = Throughput(tokens_per_batch=tokens, flops_per_batch=6.0 * n_params * tokens)
  logger = MetricsLogger(run.output_dir, run.loop.steps, int(state.step), progress=progress,
                         description=f"{run.task} {run.loss.name if run.task == 'dpo' else ''}")
  try:
    state, last_eval = fit(state, step_fn, batches, run.loop,
                           place_batch=lambda b: shard_batch(setup.batch_arrays(b), mesh),
                           evaluate=lambda s: evaluate(s.params), checkpointer=checkpointer,
                           logger=logger, throughput=throughput, before_step=before_step)
  finally:
    logger.close()
    if checkpointer:
      checkpointer.close()
  final = to_host(state.params)  # collective when params span hosts: every process calls it
  if main:
    if run.task == "rm":
      save_model(os.path.join(run.output_dir, "model"), config, final, kind="reward_model")
    else:
      save_model(os.path.join(run.output_dir, "model"), config, final)
    with open(os.path.join(run.output_dir, "eval.json"), "w") as f:
      json.dump(to_floats(last_eval), f, indent=2)
  return to_floats(last_eval)
