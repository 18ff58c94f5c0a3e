"""Per-loss default knobs (TRL / the papers) unless set, errors for knobs a loss does not use,
and reference-free DPO (log pi_ref = 0, no reference needed)."""

import dataclasses
import warnings

import jax
import numpy as np
import pytest

from jaxalign.config import ConfigError, RunConfig, load_config
from jaxalign.models import init_params, tiny_gpt2
from jaxalign.training import make_objective
from tests.training.pairs import random_pairs
from tests.training.numpy_logps import numpy_token_logps

CONFIG = tiny_gpt2()


def _loss(*overrides):
  return load_config(RunConfig, None, list(overrides)).loss


def _trl_defaults(cls) -> dict:
  return {field.name: field.default for field in dataclasses.fields(cls)}


def test_unset_knobs_take_each_loss_default_from_trl_and_the_papers():
  pytest.importorskip("trl")
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from trl import DPOConfig, KTOConfig
    from trl.experimental.cpo import CPOConfig
    from trl.experimental.orpo import ORPOConfig
  dpo, kto = _trl_defaults(DPOConfig), _trl_defaults(KTOConfig)
  for name in ("dpo", "cdpo", "robust", "ipo", "ipo_sum", "hinge", "rpo"):
    assert _loss(f"loss.name={name}").beta == dpo["beta"] == 0.1, name
  assert _loss("loss.name=kto").beta == kto["beta"]
  assert _loss("loss.name=orpo").beta == _trl_defaults(ORPOConfig)["beta"]
  simpo = _loss("loss.name=simpo")
  assert simpo.gamma == _trl_defaults(CPOConfig)["simpo_gamma"] == 0.5
  assert simpo.beta == 2.0  # Meng et al. 2024 (beta 2.0-2.5); TRL's CPOConfig.beta is CPO's
  assert simpo.label_smoothing == 0.0
  assert _loss("loss.name=rpo").alpha == 1.0  # Pang et al. 2024
  assert _loss("loss.name=cdpo").label_smoothing == 0.1
  # knobs a loss does not take stay unset; an explicit value wins
  assert (simpo.alpha, _loss().gamma, _loss().label_smoothing) == (None, None, None)
  assert _loss("loss.name=simpo", "loss.beta=2.5").beta == 2.5


def test_the_objective_runs_simpo_at_its_own_beta_and_gamma():
  objective = make_objective(load_config(RunConfig, None, ["loss.name=simpo"]), CONFIG)
  chosen, rejected = np.array([-1.0, -2.0, -0.5]), np.array([-1.5, -1.0, -0.5])
  loss, metrics = objective.loss_term({"chosen_logps": chosen, "rejected_logps": rejected,
                                       "pair_denominator": 3.0})
  expected = np.mean(np.logaddexp(0.0, -(2.0 * (chosen - rejected) - 0.5)))
  np.testing.assert_allclose(loss, expected, rtol=1e-6)
  np.testing.assert_allclose(metrics["rewards/chosen"], 2.0 * chosen.mean(), rtol=1e-6)


@pytest.mark.parametrize("overrides,key", [
    (["loss.name=dpo", "loss.gamma=1"], "loss.gamma"),
    (["loss.name=dpo", "loss.label_smoothing=0.2"], "loss.label_smoothing"),
    (["loss.name=ipo", "loss.alpha=0.5"], "loss.alpha"),
    (["loss.name=simpo", "loss.alpha=0.5"], "loss.alpha"),
    (["loss.name=simpo", "loss.reference_free=true"], "loss.reference_free"),
    (["loss.name=kto", "loss.reference_free=true"], "loss.reference_free"),
])
def test_a_knob_the_loss_does_not_use_is_a_config_error(overrides, key):
  name = overrides[0].split("=")[1]
  with pytest.raises(ConfigError, match=rf"{key}=.* is not a knob of loss.name={name}"):
    _loss(*overrides)


def test_reference_free_dpo_needs_no_reference_and_uses_log_pi_ref_0():
  run = load_config(RunConfig, None, ["loss.reference_free=true", "loss.beta=0.2"])
  objective = make_objective(run, CONFIG)
  assert not objective.needs_reference
  params = init_params(CONFIG, jax.random.key(0))
  batch = random_pairs(1, B=4, T=20, vocab=CONFIG.vocab_size)
  loss, metrics = jax.jit(objective.loss)(params, None, batch, objective.denominators(batch))
  seq = {side: (numpy_token_logps(CONFIG, params, batch[f"{side}_tokens"],
                                  batch[f"{side}_attention_mask"])
                * np.asarray(batch[f"{side}_loss_mask"])).sum(1)
         for side in ("chosen", "rejected")}
  expected = np.mean(np.logaddexp(0.0, -0.2 * (seq["chosen"] - seq["rejected"])))
  np.testing.assert_allclose(loss, expected, rtol=2e-5)
  np.testing.assert_allclose(metrics["rewards/chosen"], 0.2 * seq["chosen"].mean(), rtol=2e-5)
