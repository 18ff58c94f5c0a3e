"""One pure, jitted, donated ``step(state, batch) -> (state, metrics)`` for any objective.

Gradient accumulation runs inside the step: the global batch is split into
``micro_batches`` interleaved slices (row i goes to micro-batch i mod M, so a batch sharded
over devices stays evenly sharded in every slice), gradients and metrics are summed in a
``lax.scan``, and one optimizer update follows. Losses divide by global counts computed
before the split, so M micro-batches give the gradient of the whole batch. A statistic of the
whole batch that depends on the params (KTO's reference point) comes from a forward-only scan
over the same micro-batches before the gradient scan (``global_statistics``).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxalign.models.lora import LoraParams, bind_lora  # noqa: F401 (bind_lora re-exported)
from jaxalign.training.state import TrainState


def split_micro_batches(batch: dict, micro_batches: int) -> dict:
  """[B, ...] -> [M, B / M, ...] with row i in micro-batch i mod M."""
  def split(x):
    B = x.shape[0]
    if B % micro_batches:
      raise ValueError(f"batch size {B} is not divisible by micro_batches={micro_batches}")
    return x.reshape(B // micro_batches, micro_batches, *x.shape[1:]).swapaxes(0, 1)
  return jax.tree_util.tree_map(split, batch)


def _first(slices):
  return jax.tree_util.tree_map(lambda x: x[0], slices)


def _scan_sum(fn, slices):
  """``sum_m fn(slices[m])`` for a pytree-valued ``fn``, one micro-batch at a time."""
  shapes = jax.eval_shape(fn, _first(slices))
  zeros = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
  body = lambda total, micro: (jax.tree_util.tree_map(jnp.add, total, fn(micro)), None)
  return jax.lax.scan(body, zeros, slices)[0]


def global_statistics(objective, params, ref_params, slices: dict, denominators: dict) -> dict:
  """``sum_m objective.statistics(params, ref_params, slices[m], denominators)`` over the
  micro-batches ``slices [M, B / M, ...]``: forward passes only, one micro-batch in memory at
  a time. ``{}`` when the objective has no ``statistics`` or they are empty."""
  hook = getattr(objective, "statistics", None)
  if hook is None:
    return {}
  fn = lambda micro: hook(params, ref_params, micro, denominators)
  names = set(jax.eval_shape(fn, _first(slices)))
  if not names:
    return {}
  if names & set(denominators):
    raise ValueError(f"statistics {sorted(names & set(denominators))} clash with denominators")
  return jax.lax.stop_gradient(_scan_sum(fn, slices))


def accumulate_gradients(objective, params, ref_params, batch: dict, micro_batches: int):
  """(summed loss, summed metrics, summed grads) over micro-batches of ``batch``.

  With ``M > 1`` micro-batches, ``objective.statistics`` (if any) is summed over all of them
  first (``global_statistics``) and added to the ``denominators`` of every micro-batch's loss,
  so a loss that needs a statistic of the whole batch (KTO's reference point) gets it, not
  its micro-batch's. With ``M = 1`` no such pass runs: the loss sees the whole batch and
  computes its statistics itself.
  """
  denominators = objective.denominators(batch)
  grad_fn = jax.value_and_grad(objective.loss, has_aux=True)
  if micro_batches == 1:
    (loss, metrics), grads = grad_fn(params, ref_params, batch, denominators)
    return loss, metrics, grads
  slices = split_micro_batches(batch, micro_batches)
  denominators = dict(denominators, **global_statistics(objective, params, ref_params, slices,
                                                        denominators))

  def micro_step(micro):
    (loss, metrics), grads = grad_fn(params, ref_params, micro, denominators)
    return loss, metrics, grads

  return _scan_sum(micro_step, slices)


class LoraBound:
  """``objective`` as a function of the adapters alone over frozen ``base`` params: the
  gradient is taken w.r.t. the adapters only (XLA computes no base weight gradients); the
  reference, when the state has none, is the base with adapters off. ``entry``: the params
  are a dict whose ``entry`` holds the adapters (``bind_lora``)."""

  def __init__(self, objective, base, entry: str | None = None):
    self.objective, self.base, self.entry = objective, base, entry

  def denominators(self, batch):
    return self.objective.denominators(batch)

  def _ref(self, ref_params):
    return self.base if ref_params is None else ref_params

  def loss(self, adapters, ref_params, batch, denominators):
    return self.objective.loss(bind_lora(adapters, self.base, self.entry),
                               self._ref(ref_params), batch, denominators)

  def __getattr__(self, name):
    if name != "statistics":
      raise AttributeError(name)
    hook = getattr(self.objective, "statistics")
    return lambda adapters, ref_params, batch, denominators: hook(
        bind_lora(adapters, self.base, self.entry), self._ref(ref_params), batch,
        denominators)


def train_step(objective, state: TrainState, batch: dict, micro_batches: int = 1):
  """The un-jitted step: gradients over the batch, one optimizer update, metrics. With
  ``state.base_params`` (LoRA) ``state.params`` are the adapters (``LoraBound``)."""
  if state.base_params is not None:
    objective = LoraBound(objective, state.base_params)
  loss, metrics, grads = accumulate_gradients(objective, state.params, state.ref_params, batch,
                                              micro_batches)
  new_state = state.apply_gradients(grads)
  metrics = dict(metrics, loss=loss, grad_norm=_global_norm(grads))
  return new_state, metrics


def _global_norm(tree) -> jax.Array:
  leaves = jax.tree_util.tree_leaves(tree)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


def make_train_step(objective, *, micro_batches: int = 1, state_shardings: Any = None,
                    donate: bool = True):
  """``jit(step, donate_argnums=0)``; with ``state_shardings`` the new state keeps the
  layout of the old one (so the next call reuses the compiled program)."""
  def step(state, batch):
    return train_step(objective, state, batch, micro_batches)
  out_shardings = None if state_shardings is None else (state_shardings, None)
  return jax.jit(step, donate_argnums=(0,) if donate else (), out_shardings=out_shardings)


def make_eval_step(objective):
  """``jit((params, ref_params, batch) -> metrics)`` with the objective's global means."""
  @jax.jit
  def evaluate(params, ref_params, batch):
    loss, metrics = objective.loss(params, ref_params, batch, objective.denominators(batch))
    return dict(metrics, loss=loss)
  return evaluate
