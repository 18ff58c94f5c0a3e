"""``run_ppo(config)``: the PPO loop from the command line, with checkpoints and logging.

Each iteration: sample ``ppo.rollout_batch_size`` prompts, roll out with the compiled sampler
on the current policy, score with the reward model, compute advantages, run
``ppo.epochs x ppo.num_minibatches`` updates, update the KL coefficient and the (EMA)
reference. A checkpoint after an iteration holds everything the next one reads, so a killed
run resumes bit-identically.

Multi-host: params live on one mesh over every process's devices; each process draws its
own slice of every global prompt batch (``BatchIterator(process_index, process_count)``)
and the rollout is one global array, so every sampler, scoring and update program runs once
over the global batch; host values (metrics, the gold reward) are gathered with ``to_host``.
"""

from __future__ import annotations

import os
import signal

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign import data as D
from jaxalign.checkpoint import Checkpointer
from jaxalign.config import RunConfig, save_config
from jaxalign.config.provenance import provenance
from jaxalign.config.validate import resolve_run, validate_run
from jaxalign.models import ScalarHead
from jaxalign.parallel import (initialize_distributed, is_main_process, make_mesh, on_mesh,
                               param_placer, shard_batch, shard_params, to_host)
from jaxalign.parallel.mesh import BATCH_AXES
from jaxalign.training import run_dir, setup
from jaxalign.training.compat import check_compatibility
from jaxalign.training.guards import Interrupted, NanGuard, StopSignals, dump_json
from jaxalign.training.metrics_log import MetricsLogger, to_floats, truncate_log
from jaxalign.training.optim import learning_rate_schedule, make_optimizer
from jaxalign.training.ppo import (ema_reference, ema_update, kl_controller, make_experience,
                                   ppo_update)
from jaxalign.training.rollout import sample_rollout
from jaxalign.training.state import TrainState


def init_value_params(config, policy_params, shared: bool, seed: int) -> dict:
  """A zero-initialised value head on the policy backbone, or a separate critic that starts
  from a copy of the policy's backbone."""
  head = ScalarHead(zero_init=True).init(jax.random.PRNGKey(seed),
                                         jnp.zeros((1, config.embed_dim)))["params"]
  if shared:
    return {"head": head}
  backbone = {k: v for k, v in setup.copy_tree(policy_params).items() if k != "lm_head"}
  return {"backbone": backbone, "score": head}


def init_ppo_state(run: RunConfig, config, policy, mesh=None) -> TrainState:
  """Policy + value params, optimizer, the reference (``model.reference_from`` or a copy of
  the start policy; float32 when it is an EMA), the KL coefficient and the iteration."""
  spec = run.ppo
  reference = setup.load_reference(run, policy)
  if spec.ref_ema:
    reference = ema_reference(reference)
  params = {"policy": policy,
            "value": init_value_params(config, policy, spec.shared_value_head, run.seed)}
  if mesh is not None:
    params, reference = shard_params(params, mesh), shard_params(reference, mesh)
  state = TrainState.create(params, make_optimizer(run.optimizer), run.seed,
                            ref_params=reference,
                            extras={"kl_coef": jnp.float32(spec.kl_coef),
                                    "iteration": jnp.int32(0)})
  return state if mesh is None else on_mesh(state, mesh)


def _check_batch_layout(run: RunConfig, mesh) -> None:
  spec = run.ppo
  shards = int(np.prod([mesh.shape[a] for a in BATCH_AXES]))
  size = spec.rollout_batch_size // spec.num_minibatches
  for what, rows in (("ppo.rollout_batch_size", spec.rollout_batch_size),
                     ("a minibatch (ppo.rollout_batch_size / ppo.num_minibatches)", size)):
    if rows % max(shards, jax.process_count()):
      raise ValueError(f"{what} = {rows} rows must be divisible by the mesh's batch shards "
                       f"({shards} = data x fsdp) and the {jax.process_count()} processes")


def _gold_reward(gold_reward, rollout) -> float:
  """The gold reward of a rollout, on host values every process holds (a gather)."""
  P = rollout.prompt_tokens.shape[1]
  prompt, prompt_mask, sequence, mask = to_host((rollout.prompt_tokens, rollout.prompt_mask,
                                                 rollout.sequence, rollout.response_mask))
  return float(np.mean(gold_reward(prompt, sequence[:, P:], mask, prompt_mask)))


def ppo_iteration(run: RunConfig, config, rm, state: TrainState, prompts, gold_reward=None,
                  mesh=None):
  """One rollout + update. ``prompts`` is this process's slice of the global prompt batch
  (the whole batch on one process). Returns (state, metrics dict of floats)."""
  spec = run.ppo
  rm_config, rm_params = rm
  tokens, prompt_mask = prompts.tokens, prompts.attention_mask
  if mesh is not None:
    tokens, prompt_mask = shard_batch((tokens, prompt_mask), mesh)
  iteration = int(to_host(state.extras["iteration"]))
  rng = np.asarray(jax.random.fold_in(to_host(state.rng), iteration))
  rollout = sample_rollout(config, state.params["policy"], tokens, prompt_mask,
                           jax.random.fold_in(rng, 0), max_new_tokens=spec.max_new_tokens,
                           temperature=spec.temperature, eos_id=config.eos_token_id)
  experience, _, metrics = make_experience(config, rm_config, spec, state.params,
                                           state.ref_params, rm_params, rollout,
                                           state.extras["kl_coef"])
  metrics = to_floats(to_host(metrics))
  if gold_reward is not None:
    metrics["rollout/gold_reward"] = _gold_reward(gold_reward, rollout)
  state, history = ppo_update(config, spec, state, experience,
                              np.asarray(jax.random.fold_in(rng, 1)),
                              micro_batches=run.loop.micro_batches)
  history = [to_floats(to_host(h)) for h in history]
  for name in history[0]:
    metrics[name] = float(np.mean([h[name] for h in history]))
  metrics["ppo/first_minibatch_clip_fraction"] = history[0]["ppo/clip_fraction"]
  metrics["ppo/first_minibatch_ratio_mean"] = history[0]["ppo/ratio_mean"]
  # The controller reads the KL of the estimator the penalty uses (objective/kl).
  controller = kl_controller(spec, float(to_host(state.extras["kl_coef"]))).update(
      metrics["objective/kl"], spec.rollout_batch_size)
  metrics["ppo/kl_coef"] = float(controller.value)
  state = state.replace(
      ref_params=ema_update(state.ref_params, state.params["policy"], spec.ref_ema),
      extras={"kl_coef": jnp.float32(controller.value), "iteration": jnp.int32(iteration + 1)})
  return (state if mesh is None else on_mesh(state, mesh)), metrics


def prompt_iterator(run: RunConfig, rows) -> D.BatchIterator:
  """This process's slices of the global prompt batches, left-padded to the bucket of each
  batch's longest prompt (default buckets), not the prompt budget: the sampler and the
  updates run at the data's length (one compile per bucket)."""
  return D.BatchIterator(rows, run.ppo.rollout_batch_size, seed=run.seed,
                         process_index=jax.process_index(), process_count=jax.process_count())


def run_ppo(run: RunConfig, progress: bool = True, on_existing: str = "auto") -> dict:
  """The PPO run; ``on_existing``, the NaN guard and SIGINT / SIGTERM as ``run_training``."""
  with StopSignals() as stop:
    return _run_ppo(run, progress, on_existing, stop)


def _run_ppo(run: RunConfig, progress: bool, on_existing: str, stop) -> dict:
  run = resolve_run(run)
  validate_run(run)  # check_ppo_spec and the rest, before anything is built or written
  check_compatibility(run)  # tokenizer, lengths, reference, reward model: configs only
  initialize_distributed()
  stop.install()  # SIGINT / SIGTERM from here on: a checkpoint, then Interrupted
  mesh = make_mesh(run.mesh)
  _check_batch_layout(run, mesh)
  begin = run_dir.prepare(run, on_existing)
  main = is_main_process()
  if main:
    print(begin.message)
  if begin.mode == "complete":
    return begin.saved_eval
  if main:
    save_config(run, os.path.join(run.output_dir, "config.yaml"), provenance(run))
  spec = run.ppo
  rows, report = setup.build_prompt_rows(run, "train", spec.max_new_tokens)
  if main:
    print(f"prompts: {report.summary() if report.num_rows else len(rows)}")
    if isinstance(rows, D.MixedRows):
      print(f"prompts: mixture {rows.describe()}")
  config, policy = setup.load_policy(run, setup.vocab_overrides(run), place=param_placer(mesh))
  rm_config, rm_params = setup.load_reward_model(run.online.reward_model)
  rm = (rm_config, shard_params(rm_params, mesh))
  state = init_ppo_state(run, config, policy, mesh)
  prompts = prompt_iterator(run, rows)
  gold = setup.synthetic_task(run).gold_reward if run.data.source == "synthetic" else None
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
                         description="ppo")
  try:
    state, metrics = _ppo_loop(run, config, rm, state, prompts, gold, mesh, start,
                               checkpointer, logger, stop)
  finally:
    logger.close()
    checkpointer.close()
  policy_params = to_host(state.params["policy"])  # every process joins the gather
  if main:
    setup.save_run_model(run, os.path.join(run.output_dir, "model"), config, policy_params)
    dump_json(metrics, os.path.join(run.output_dir, "eval.json"))  # strict JSON
  return metrics


def _ppo_loop(run: RunConfig, config, rm, state, prompts, gold, mesh, start: int, checkpointer,
              logger, stop):
  """Iterations ``start..loop.steps``: the NaN guard after each, checkpoints on the cadence,
  at the end and on SIGINT / SIGTERM (then ``Interrupted``). Returns (state, last metrics)."""
  guard = NanGuard(run.output_dir, checkpointer.latest_step)
  schedule = learning_rate_schedule(run.optimizer)
  every, steps, metrics = run.loop.checkpoint_every, run.loop.steps, {}
  stop.armed = True
  for iteration in range(start, steps):
    batch = next(prompts)
    state, metrics = ppo_iteration(run, config, rm, state, batch, gold, mesh)
    done = iteration + 1
    metrics["train/learning_rate"] = float(schedule(int(to_host(state.step)) - 1))
    guard.check_metrics(done, metrics, batch)
    if done == steps or done % run.loop.log_every == 0:
      logger.log(done, metrics)
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
