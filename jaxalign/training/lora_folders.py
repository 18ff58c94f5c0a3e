"""A LoRA run's ``adapters/`` folder: the adapters alone, and how to get their base back.

``jaxalign train`` with ``model.lora.rank > 0`` writes ``model/`` (the merged policy, what
eval, sample and ``model.init_from`` read) and ``adapters/`` (``save_run_adapters``: kind
``lora_adapters``, the LoRA config in ``jaxalign_config.json``, the tokenizer, and
``run_config.yaml``, which names the base). ``load_adapters_base`` rebuilds the base exactly
as the run did (``setup.load_policy``: the HF folder, the jaxalign folder, or the preset and
seed) and merges the adapters in; ``jaxalign export --model <run>/adapters`` uses it.
"""

from __future__ import annotations

import os

from jaxalign.config import RunConfig, load_config, save_config
import jax

from jaxalign.models import CheckpointError, init_lora, load_model, merge_lora
from jaxalign.models.params_io import save_model
from jaxalign.training import setup
from jaxalign.training.tokenizers import RUN_CONFIG, _absolute_paths, copy_tokenizer

ADAPTERS_KIND = "lora_adapters"


def init_adapters(run: RunConfig, config):
  """A LoRA run's fresh adapters (B = 0; their own seed, ``run.seed + 1``)."""
  return init_lora(config, jax.random.PRNGKey(run.seed + 1))


def base_is_reference(run: RunConfig, config) -> bool:
  """A LoRA run without ``model.reference_from``: the frozen base is the reference."""
  return config.lora is not None and not run.model.reference_from


def save_final_model(run: RunConfig, config, params, base=None, kind: str = "policy") -> None:
  """``output_dir/model`` (host ``params``; with a LoRA ``base`` the merged policy, ``lora``
  off) and, with a base, ``output_dir/adapters`` (``save_run_adapters``)."""
  model_config = config
  if base is not None:
    adapters, params = params, merge_lora(config, base, params)
    model_config = config.replace(lora=None)
  setup.save_run_model(run, os.path.join(run.output_dir, "model"), model_config, params,
                       kind=kind)
  if base is not None:
    save_run_adapters(run, os.path.join(run.output_dir, "adapters"), config, adapters)


def save_run_adapters(run, path: str, config, adapters) -> None:
  """A LoRA run's adapters alone (kind ``lora_adapters``; ``config.lora`` says their rank,
  alpha and targets), with the tokenizer and ``run_config.yaml``, which names the base
  (``model.path`` / ``model.init_from``, or the preset and seed): ``load_adapters_base``
  rebuilds it and ``jaxalign export`` merges them into it."""
  record = copy_tokenizer(run, path)
  save_model(path, config, adapters, kind=ADAPTERS_KIND, tokenizer=record)
  save_config(_absolute_paths(run), os.path.join(path, RUN_CONFIG))


def load_adapters_base(path: str):
  """``(config, merged params)`` of a ``lora_adapters`` folder: the base its run started
  from (rebuilt from its ``run_config.yaml``) with the adapters merged in; ``config`` has
  ``lora`` off."""
  run_config = os.path.join(path, RUN_CONFIG)
  if not os.path.exists(run_config):
    raise CheckpointError(f"{run_config}: not found; the adapters' base is unknown")
  run = load_config(RunConfig, run_config)
  config, adapters, _ = load_model(path)
  try:
    _, base = setup.load_policy(run, setup.vocab_overrides(run))
  except (OSError, CheckpointError) as error:
    raise CheckpointError(f"{path}: cannot load the adapters' base ({error})") from None
  _check_attaches(base, adapters, path)
  return config.replace(lora=None), merge_lora(config, base, adapters)


def _check_attaches(base, adapters, path: str, where: str = "") -> None:
  """A one-line CheckpointError when an adapter's ``a @ b`` does not have its base
  kernel's shape (or the base has no such projection): another base than the run's."""
  for name, node in adapters.items():
    here = f"{where}/{name}"
    if name not in base:
      raise CheckpointError(f"{path}: adapter {here} has no projection in the base")
    if "a" in node and "b" in node:
      want = tuple(base[name]["kernel"].shape)
      got = (*node["a"].shape[:-1], node["b"].shape[-1])
      if got != want:
        raise CheckpointError(f"{path}: adapter {here} makes a {got} update for the base's "
                              f"{want} kernel (another base than the run's)")
    else:
      _check_attaches(base[name], node, path, here)
