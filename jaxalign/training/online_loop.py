"""The one driver of the online trainers that sample their own data (PPO, GRPO / RLOO).

``run_online(run, algorithm)`` does what every such run needs: validation before anything
is built, the output folder (fresh, resume or complete), the mesh, prompts (each process
draws its own slice of every global prompt batch), the policy, checkpoints (on the cadence,
at the end, on SIGINT / SIGTERM), the NaN guard, metrics and the final model. What differs
between algorithms is an ``OnlineAlgorithm``: how the state starts, what the run loads
besides the policy (a reward model, reward functions), and one iteration.

Multi-host: params live on one mesh over every process's devices; the prompts of an
iteration are one global array, so every sampler, scoring and update program runs once over
the global batch; host values (metrics, rewards of decoded text) are gathered with
``to_host``.
"""

from __future__ import annotations

import dataclasses
import os
import signal
from typing import Any, Callable

import jax
import numpy as np

from jaxalign import data as D
from jaxalign.checkpoint import Checkpointer
from jaxalign.config import RunConfig, save_config
from jaxalign.config.provenance import provenance
from jaxalign.config.validate import resolve_run, validate_run
from jaxalign.parallel import (initialize_distributed, is_main_process, make_mesh,
                               param_placer, shard_batch, to_host)
from jaxalign.parallel.mesh import batch_shards
from jaxalign.training import run_dir, setup
from jaxalign.training.compat import check_compatibility
from jaxalign.training.guards import Interrupted, NanGuard, StopSignals, dump_json
from jaxalign.training.metrics_log import MetricsLogger, to_floats, truncate_log
from jaxalign.training.optim import learning_rate_schedule
from jaxalign.training.lora_folders import save_final_model
from jaxalign.training.rollout import sample_rollout


@dataclasses.dataclass(frozen=True)
class OnlineAlgorithm:
  """What one online trainer adds to the shared driver.

  name: the progress-bar label. prompts_per_iteration(run): the global prompt batch.
  max_new_tokens(run): the response budget (prompts get the rest of ``data.max_length``).
  update_batches(run): ``(what, rows)`` pairs whose row counts must split evenly over the
    mesh's batch shards and the processes (checked before anything is built).
  prepare(run, config, mesh): what the iterations read besides the state (a reward model,
    reward functions, the gold reward), as one object.
  init_state(run, config, policy, mesh): the ``TrainState``; ``extras["iteration"]`` counts
    finished iterations.
  iteration(run, config, context, state, prompts, mesh): ``(state, metrics)`` of one
    iteration on this process's slice of the global prompt batch.
  evaluate(run, config, context, state): held-out metrics (logged with an ``eval/`` prefix
    every ``loop.eval_every`` iterations and at the end, and written to ``eval.json``), or
    None for none.
  """

  name: str
  prompts_per_iteration: Callable[[RunConfig], int]
  max_new_tokens: Callable[[RunConfig], int]
  update_batches: Callable[[RunConfig], list[tuple[str, int]]]
  prepare: Callable[..., Any]
  init_state: Callable[..., Any]
  iteration: Callable[..., tuple[Any, dict]]
  evaluate: Callable[..., dict] | None = None


def check_batch_layout(run: RunConfig, mesh, batches: list[tuple[str, int]]) -> None:
  """Each ``(what, rows)`` must split over the mesh's batch shards and the processes."""
  shards = batch_shards(mesh)
  for what, rows in batches:
    if rows % max(shards, jax.process_count()):
      raise ValueError(f"{what} = {rows} rows must be divisible by the mesh's batch shards "
                       f"({shards} = data x fsdp) and the {jax.process_count()} processes")


def prompt_iterator(run: RunConfig, rows, batch_size: int) -> D.BatchIterator:
  """This process's slices of the global prompt batches, left-padded to the bucket of each
  batch's longest prompt (default buckets), not the prompt budget: the sampler and the
  updates run at the data's length (one compile per bucket)."""
  return D.BatchIterator(rows, batch_size, seed=run.seed, process_index=jax.process_index(),
                         process_count=jax.process_count())


def run_online(run: RunConfig, algorithm: OnlineAlgorithm, progress: bool = True,
               on_existing: str = "auto") -> dict:
  """The run; ``on_existing``, the NaN guard and SIGINT / SIGTERM as ``run_training``.
  Returns the last iteration's metrics (also written to ``eval.json``)."""
  with StopSignals() as stop:
    return _run(run, algorithm, progress, on_existing, stop)


def _run(run: RunConfig, algorithm: OnlineAlgorithm, progress: bool, on_existing: str, stop):
  run = resolve_run(run)
  validate_run(run)  # the algorithm's spec checks and the rest, before anything is built
  check_compatibility(run)  # tokenizer, lengths, reference, reward model: configs only
  initialize_distributed()
  stop.install()  # SIGINT / SIGTERM from here on: a checkpoint, then Interrupted
  mesh = make_mesh(run.mesh)
  check_batch_layout(run, mesh, algorithm.update_batches(run))
  begin = run_dir.prepare(run, on_existing)
  main = is_main_process()
  if main:
    print(begin.message)
  if begin.mode == "complete":
    return begin.saved_eval
  if main:
    save_config(run, os.path.join(run.output_dir, "config.yaml"), provenance(run))
  rows, report = setup.build_prompt_rows(run, "train", algorithm.max_new_tokens(run))
  if main:
    print(f"prompts: {report.summary() if report.num_rows else len(rows)}")
    if isinstance(rows, D.MixedRows):
      print(f"prompts: mixture {rows.describe()}")
  config, policy = setup.load_policy(run, setup.vocab_overrides(run), place=param_placer(mesh))
  context = algorithm.prepare(run, config, mesh)
  state = algorithm.init_state(run, config, policy, mesh)
  prompts = prompt_iterator(run, rows, algorithm.prompts_per_iteration(run))
  # Always a checkpointer: checkpoint_every=0 still saves on SIGINT / SIGTERM.
  checkpointer = Checkpointer(os.path.join(run.output_dir, "checkpoints"),
                              save_every=run.loop.checkpoint_every,
                              keep=run.loop.keep_checkpoints)
  if begin.mode == "resume":
    state, data_state = checkpointer.restore(state)
    prompts.set_state(data_state)
    truncate_log(run.output_dir, (checkpointer.restored_meta or {}).get("metrics_offset"))
  start = int(to_host(state.extras["iteration"]))
  logger = MetricsLogger(run.output_dir, run.loop.steps, start, progress=progress,
                         description=algorithm.name)
  try:
    state, metrics = _loop(run, algorithm, config, context, state, prompts, mesh, start,
                           checkpointer, logger, stop)
  finally:
    logger.close()
    checkpointer.close()
  policy_params = to_host(state.params["policy"])  # every process joins the gather
  base = None if state.base_params is None else to_host(state.base_params)
  if main:  # LoRA: model/ is the merged policy, adapters/ beside it
    save_final_model(run, config, policy_params, base)
    dump_json(metrics, os.path.join(run.output_dir, "eval.json"))  # strict JSON
  return metrics


def _loop(run: RunConfig, algorithm: OnlineAlgorithm, config, context, state, prompts, mesh,
          start: int, checkpointer, logger, stop):
  """Iterations ``start..loop.steps``: the NaN guard after each, checkpoints on the cadence,
  at the end and on SIGINT / SIGTERM (then ``Interrupted``). Returns (state, last metrics)."""
  guard = NanGuard(run.output_dir, checkpointer.latest_step)
  schedule = learning_rate_schedule(run.optimizer)
  every, steps, metrics = run.loop.checkpoint_every, run.loop.steps, {}
  stop.armed = True
  for iteration in range(start, steps):
    batch = next(prompts)
    state, metrics = algorithm.iteration(run, config, context, state, batch, mesh)
    done = iteration + 1
    metrics["train/learning_rate"] = float(schedule(int(to_host(state.step)) - 1))
    guard.check_metrics(done, metrics, batch)
    if done == steps or done % run.loop.log_every == 0:
      logger.log(done, metrics)
    if algorithm.evaluate and (done == steps or (run.loop.eval_every
                                                 and done % run.loop.eval_every == 0)):
      held_out = {f"eval/{k}": v for k, v in
                  algorithm.evaluate(run, config, context, state).items()}
      if held_out:  # an evaluator with nothing to measure (no answers) logs no row
        logger.log(done, held_out)
      metrics = dict(metrics, **held_out)
    interrupted = stop.requested or checkpointer.reached_preemption(done)
    if (every and (done % every == 0 or done == steps)) or interrupted:
      guard.check_params(done, state.params)
      checkpointer.save(done, state, prompts.get_state(), force=True,
                        meta={"metrics_offset": logger.offset})
    logger.advance()
    if interrupted:
      checkpointer.wait()
      raise Interrupted(stop.signum or signal.SIGTERM, done, True)
  guard.check_params(steps, state.params)
  return state, metrics


def sample_iteration(config, spec, state, prompts, mesh=None, num_samples: int = 1):
  """The rollout an on-policy iteration starts from: the prompt batch placed on ``mesh``,
  the iteration's key (``state.rng`` folded with ``state.extras["iteration"]``: a resumed
  run draws the same samples), and ``spec``'s sampler settings (``max_new_tokens``,
  ``temperature``, ``top_k``, ``top_p``). Returns ``(iteration, rng, rollout)``; the update
  takes ``fold_in(rng, 1)``."""
  tokens, prompt_mask = prompts.tokens, prompts.attention_mask
  if mesh is not None:
    tokens, prompt_mask = shard_batch((tokens, prompt_mask), mesh)
  iteration = int(to_host(state.extras["iteration"]))
  rng = np.asarray(jax.random.fold_in(to_host(state.rng), iteration))
  rollout = sample_rollout(config, state.policy(), tokens, prompt_mask,
                           jax.random.fold_in(rng, 0), max_new_tokens=spec.max_new_tokens,
                           temperature=spec.temperature, eos_id=config.eos_token_id,
                           top_k=spec.top_k, top_p=spec.top_p, num_samples=num_samples)
  return iteration, rng, rollout


def mean_history(metrics: dict, history: list) -> tuple[dict, list[dict]]:
  """``(metrics, history)``: ``metrics`` with the mean over the update's steps of each
  metric in ``history`` (per-step dicts of device values) added, and ``history`` as floats."""
  history = [to_floats(to_host(h)) for h in history]
  for name in history[0]:
    metrics[name] = float(np.mean([h[name] for h in history]))
  return metrics, history
