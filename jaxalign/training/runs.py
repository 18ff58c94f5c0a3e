"""``run_training(config)``: one offline run (SFT, reward model or DPO family) end to end.

Writes under ``config.output_dir``: ``config.yaml`` (resolved), ``metrics.jsonl`` and
TensorBoard events, ``checkpoints/`` (resumed from automatically when the config matches:
``run_dir``), ``model/`` (the final params, ``jaxalign.models.load_model``), ``eval.json``
and ``data_report.json``; ``nan_debug/`` when the NaN guard stopped the run.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np

from jaxalign import data as D
from jaxalign.checkpoint import Checkpointer
from jaxalign.config import RunConfig, save_config
from jaxalign.config.provenance import provenance
from jaxalign.config.validate import resolve_run, validate_run
from jaxalign.models import ScalarHead, count_params, lora_param_count
from jaxalign.models.lora import LoraParams
from jaxalign.parallel.mesh import batch_shards
from jaxalign.parallel import (initialize_distributed, is_main_process, make_mesh, on_mesh,
                               param_placer, shard_batch, shard_params, to_host)
from jaxalign.training import run_dir, setup
from jaxalign.training.batch_layout import batch_layout
from jaxalign.training.compat import check_compatibility
from jaxalign.training.dataset_pass import (CachedReference,  # noqa: F401 (re-exported)
                                            make_evaluator, precompute_reference)
from jaxalign.training.guards import NanGuard, StopSignals, dump_json
from jaxalign.training.loop import Throughput, fit
from jaxalign.training.lora_folders import base_is_reference, init_adapters, save_final_model
from jaxalign.training.metrics_log import MetricsLogger, to_floats, truncate_log
from jaxalign.training.online_dpo import (OnlineRefresher, SwappableBatches, is_offline,
                                          online_reference, reward_model_extras)
from jaxalign.training.kto_unpaired import UnpairedKTOObjective
from jaxalign.training.objectives import (PreferenceObjective, RewardModelObjective,
                                          SFTObjective)
from jaxalign.training.optim import learning_rate_schedule, make_optimizer
from jaxalign.training.preference_losses import loss_knobs, preference_loss
from jaxalign.training.state import TrainState
from jaxalign.training.step import make_train_step

def make_objective(run: RunConfig, config, rows=None):
  """The run's objective; a DPO-family loss at ``run.loss``'s knobs (each loss's own
  defaults where unset: ``LossSpec``, ``preference_losses.LOSS_DEFAULTS``). ``rows`` of
  unpaired examples (``D.UnpairedRows``) take KTO on unpaired examples (``kto_unpaired``)."""
  if run.task == "sft":
    return SFTObjective(config)
  if run.task == "rm":
    return RewardModelObjective(config, margin_scale=run.data.margin_scale)
  if setup.is_unpaired(rows):
    return UnpairedKTOObjective(config, **loss_knobs("kto", **run.loss.knobs()))
  spec = preference_loss(run.loss.name, **run.loss.knobs())
  return PreferenceObjective(config, spec.loss_term, average_logps=spec.average_logps,
                             needs_reference=spec.needs_reference)


def uses_cached_reference(run: RunConfig, objective) -> bool:
  """Whether the run's batches carry reference log-probs computed before step 1."""
  return (run.task in ("dpo", "online-dpo") and objective.needs_reference
          and run.loss.reference == "cached")


def initial_state(run: RunConfig, config, policy, objective, *, reference,
                  rm_params=None, place=lambda tree: tree):
  """``(state, ref_params)`` a run of ``run_training`` starts from; also what ``jaxalign
  plan`` compiles (under ``jax.eval_shape``, so nothing is allocated).

  ``state.params``: the policy, the reward model (rm) or LoRA adapters over ``base_params``
  (the policy, frozen). ``ref_params`` (None when the objective needs none): the reference
  that the cache and the evaluator read: ``reference()`` (``model.reference_from`` or a copy
  of the policy), or with LoRA the base itself. Online runs and ``loss.reference=in_step``
  keep a copy in ``state.ref_params`` (it may move, a checkpoint must hold it, the step
  donates the state); LoRA's base reference stays the state's ``base_params``. ``rm_params``:
  online-dpo's reward model, in ``state.extras`` with its optimizer state when retrained.
  ``place`` puts each tree on the devices."""
  online = run.task == "online-dpo"
  lora = config.lora is not None
  base = place(policy) if lora else None
  ref_params = None
  if run.task == "rm":
    params = reward_model_params(config, policy, run.seed)
  else:
    params = init_adapters(run, config) if lora else policy
    if run.task in ("dpo", "online-dpo") and objective.needs_reference:
      ref_params = base if base_is_reference(run, config) else place(reference())
  params = place(params)
  in_step_ref = None
  if ref_params is not None and ref_params is not base and (
      run.loss.reference == "in_step" or online):
    in_step_ref = setup.copy_tree(ref_params)
    if online:
      in_step_ref = online_reference(run, in_step_ref)  # float32 for an EMA reference
  extras = None if rm_params is None else reward_model_extras(run, place(rm_params))
  state = TrainState.create(params, make_optimizer(run.optimizer), run.seed,
                            ref_params=in_step_ref, extras=extras, base_params=base)
  return state, ref_params


def reward_model_params(config, policy_params, seed: int) -> dict:
  """A reward model on the policy's backbone (LM head dropped) with a fresh score head."""
  backbone = {k: v for k, v in policy_params.items() if k != "lm_head"}
  head = ScalarHead().init(jax.random.PRNGKey(seed), jnp.zeros((1, config.embed_dim)))
  return {"backbone": backbone, "score": head["params"]}


def _tokens_per_batch(run: RunConfig, rows) -> int:
  lengths = np.asarray(rows.lengths(), np.float64)
  per_row = lengths.mean() * (1 if run.task == "sft" or setup.is_unpaired(rows) else 2)
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


def run_training(run: RunConfig, progress: bool = True, on_existing: str = "auto") -> dict:
  """Trains per ``run``; returns the final eval metrics. An existing ``output_dir`` is
  resumed when its config matches, else ``on_existing`` ("resume" or "overwrite") decides
  (``run_dir``). Raises ``guards.NonFiniteError`` on divergence and ``guards.Interrupted``
  (after a checkpoint) on SIGINT / SIGTERM."""
  with StopSignals() as stop:
    return _run_training(run, progress, on_existing, stop)


def _run_training(run: RunConfig, progress: bool, on_existing: str, stop) -> dict:
  run = resolve_run(run)
  validate_run(run)  # before anything is built or written
  online = run.task == "online-dpo"
  refreshing = online and not is_offline(run)
  check_compatibility(run)  # tokenizer, lengths, reference, reward model: configs only
  initialize_distributed()
  stop.install()  # SIGINT / SIGTERM from here on: a checkpoint, then Interrupted
  start = run_dir.prepare(run, on_existing)
  main = is_main_process()
  if main:
    print(start.message)
  if start.mode == "complete":
    return start.saved_eval
  mesh = make_mesh(run.mesh)
  if main:
    save_config(run, os.path.join(run.output_dir, "config.yaml"), provenance(run))
  if refreshing:  # pairs come from the policy; the prompts are the data
    train_rows, train_report = setup.build_prompt_rows(run, "train", run.online.max_new_tokens)
  else:
    train_rows, train_report = _build_rows(run, "train", main)
  eval_rows, eval_report = _build_rows(run, "eval", main)
  if main:
    dump_json({"train": train_report.to_dict(), "eval": eval_report.to_dict()},
              os.path.join(run.output_dir, "data_report.json"))
    describe = lambda rows, report: (f"{len(rows)} rows" + (f" ({report.summary()})"
                                                            if report.num_rows else ""))
    print(f"data: train {describe(train_rows, train_report)}; "
          f"eval {describe(eval_rows, eval_report)}")
    if isinstance(train_rows, D.MixedRows):
      print(f"data: train mixture {train_rows.describe()}")

  config, policy = setup.load_policy(run, setup.vocab_overrides(run),
                                     place=param_placer(mesh))
  objective = make_objective(run, config, train_rows)
  lora = config.lora is not None  # train adapters over the frozen base (LoraBound)
  rm = None
  if online and run.online.reward_model:
    rm = setup.load_reward_model(run.online.reward_model)
  state, ref_params = initial_state(
      run, config, policy, objective, reference=lambda: setup.load_reference(run, policy),
      rm_params=None if rm is None else rm[1], place=lambda tree: shard_params(tree, mesh))
  state = on_mesh(state, mesh)
  if lora and main:
    print(f"lora: {lora_param_count(state.params):,} adapter params (rank "
          f"{config.lora.rank}) over a frozen base of {count_params(policy):,}")
  state_shardings = jax.tree_util.tree_map(lambda x: x.sharding, state)

  layout = batch_layout(run, row_multiple=batch_shards(mesh) * run.loop.micro_batches)
  cached = uses_cached_reference(run, objective)
  def with_reference(rows, current_state):
    if not cached:
      return rows
    reference = current_state.ref_params if online else ref_params
    if reference is None:  # LoRA, the base as the fixed reference of an online run
      reference = current_state.base_params
    return precompute_reference(objective, reference, rows, run.data.eval_batch_size, mesh,
                                progress=progress and not online, layout=layout)

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
  # Always a checkpointer: checkpoint_every=0 still saves on SIGINT / SIGTERM.
  checkpointer = Checkpointer(os.path.join(run.output_dir, "checkpoints"),
                              save_every=run.loop.checkpoint_every,
                              keep=run.loop.keep_checkpoints, best_metric=run.loop.best_metric)
  if start.mode == "resume":
    state, data_state = checkpointer.restore(state)
    if data_state and not refreshing:  # a refreshing run regenerates its pairs
      batches.set_state(data_state)
    truncate_log(run.output_dir, (checkpointer.restored_meta or {}).get("metrics_offset"))
  step_fn = make_train_step(objective, micro_batches=run.loop.micro_batches,
                            state_shardings=state_shardings)
  # Held-out implicit rewards are measured against the initial (SFT) reference.
  evaluate = make_evaluator(objective, eval_rows, ref_params, run.data.eval_batch_size, mesh,
                            layout=layout)
  policy_of = lambda s: LoraParams(s.base_params, s.params) if lora else s.params
  # LoRA: the base may be the reference; the step donates it, so read the state's own.
  eval_reference = ((lambda s: s.base_params) if ref_params is not None and
                    base_is_reference(run, config) else (lambda s: None))
  tokens = _tokens_per_batch(run, train_rows)
  n_params = count_params(policy)
  throughput = Throughput(tokens_per_batch=tokens, flops_per_batch=6.0 * n_params * tokens)
  logger = MetricsLogger(run.output_dir, run.loop.steps, int(state.step), progress=progress,
                         description=f"{run.task} {run.loss.name if run.task == 'dpo' else ''}")
  try:
    state, last_eval = fit(state, step_fn, batches, run.loop,
                           place_batch=lambda b: shard_batch(layout(setup.batch_arrays(b)),
                                                             mesh),
                           evaluate=lambda s: evaluate(policy_of(s), eval_reference(s)),
                           checkpointer=checkpointer,
                           logger=logger, throughput=throughput, before_step=before_step,
                           learning_rate=learning_rate_schedule(run.optimizer),
                           guard=NanGuard(run.output_dir, checkpointer.latest_step), stop=stop)
  finally:
    logger.close()
    checkpointer.close()
  final = to_host(state.params)  # collective when params span hosts: every process calls it
  base = None if state.base_params is None else to_host(state.base_params)
  if main:  # LoRA: model/ is the merged policy (what eval, sample, export, init_from read)
    save_final_model(run, config, final, base,
                     kind="reward_model" if run.task == "rm" else "policy")
    dump_json(to_floats(last_eval), os.path.join(run.output_dir, "eval.json"))  # strict JSON
  return to_floats(last_eval)
