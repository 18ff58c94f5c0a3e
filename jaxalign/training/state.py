"""The training state: everything a step reads and writes, and a checkpoint restores."""

from __future__ import annotations

from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import optax


@flax.struct.dataclass
class TrainState:
  """params and optimizer state; step; a raw uint32 PRNG key; frozen reference params.

  ``ref_params`` is None when the objective needs no reference (SFT, RM, reference-free
  losses, cached reference log-probs). ``extras`` holds objective-specific state (e.g. an
  adaptive KL coefficient) as a dict of arrays. ``base_params``: LoRA runs
  (``config.lora``) train ``params`` = the adapters only (the only tree with gradients and
  optimizer state) over these frozen base params, which are also the reference (adapters
  off: ``train_step``).
  """

  step: jax.Array
  params: Any
  opt_state: Any
  rng: jax.Array
  ref_params: Any = None
  extras: Any = None
  base_params: Any = None
  tx: optax.GradientTransformation = flax.struct.field(pytree_node=False, default=None)

  @classmethod
  def create(cls, params, tx: optax.GradientTransformation, seed: int, ref_params=None,
             extras=None, base_params=None) -> "TrainState":
    return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
               rng=jax.random.PRNGKey(seed), ref_params=ref_params, extras=extras,
               base_params=base_params, tx=tx)

  def policy(self, entry: str | None = "policy"):
    """The policy's params as the model reads them: ``params[entry]`` (``params`` itself
    for ``entry=None``), bound to ``base_params`` in a LoRA run (``LoraParams``)."""
    params = self.params if entry is None else self.params[entry]
    if self.base_params is None:
      return params
    from jaxalign.models.lora import LoraParams
    return LoraParams(self.base_params, params)

  def bound_params(self, entry: str = "policy"):
    """``params`` with ``params[entry]`` bound to the frozen base in a LoRA run (the online
    trainers' ``{"policy": adapters, "value": ...}``), ``params`` itself otherwise."""
    if self.base_params is None:
      return self.params
    from jaxalign.models.lora import bind_lora
    return bind_lora(self.params, self.base_params, entry)

  def reference(self):
    """The reference params: ``ref_params``, or a LoRA run's frozen base when it has none."""
    return self.base_params if self.ref_params is None else self.ref_params

  def apply_gradients(self, grads) -> "TrainState":
    updates, opt_state = self.tx.update(grads, self.opt_state, self.params)
    return self.replace(step=self.step + 1, params=optax.apply_updates(self.params, updates),
                        opt_state=opt_state)
