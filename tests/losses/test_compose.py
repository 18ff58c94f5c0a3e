"""Loss composition: RPO = DPO + alpha * NLL(chosen) as a one-line weighted sum."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxalign.losses import (dpo_loss, ipo_loss, sft_loss, statistics_of, term, weighted_sum,
                             with_statistics)

QUANTITIES = {
    "chosen_logps": jnp.array([-10.0, -5.0]), "rejected_logps": jnp.array([-12.0, -4.0]),
    "ref_chosen_logps": jnp.array([-11.0, -5.0]), "ref_rejected_logps": jnp.array([-11.0, -5.0]),
    "chosen_token_logps": jnp.array([[0.0, -1.0, -2.0, -50.0], [0.0, -0.5, -70.0, -70.0]]),
    "chosen_loss_mask": jnp.array([[0, 1, 1, 0], [0, 1, 0, 0]]),
}
NLL_NAMES = {"token_logps": "chosen_token_logps", "loss_mask": "chosen_loss_mask"}


def test_rpo_is_dpo_plus_alpha_nll():
  rpo = weighted_sum({"dpo": term(dpo_loss, beta=0.1),
                      "nll": (0.5, term(sft_loss, rename=NLL_NAMES))})
  loss, metrics = jax.jit(rpo)(QUANTITIES)
  # DPO 0.6712677647 (see test_dpo_family) + 0.5 * NLL 7/6 = 1.2546010981
  np.testing.assert_allclose(loss, 0.6712677647275813 + 0.5 * 7 / 6, rtol=1e-6)
  np.testing.assert_allclose(metrics["loss"], loss)
  np.testing.assert_allclose(metrics["dpo/loss"], 0.6712677647275813, rtol=1e-6)
  np.testing.assert_allclose(metrics["nll/nll"], 7 / 6, rtol=1e-6)
  np.testing.assert_allclose(metrics["dpo/rewards/margins"], 0.05, rtol=1e-6)
  assert "dpo/rewards/accuracies" in metrics and "nll/num_tokens" in metrics


def test_gradient_of_a_sum_is_the_sum_of_gradients():
  rpo = weighted_sum({"dpo": term(dpo_loss, beta=0.1),
                      "nll": (0.5, term(sft_loss, rename=NLL_NAMES))})
  floats = {name: value for name, value in QUANTITIES.items() if name != "chosen_loss_mask"}
  mask = {"chosen_loss_mask": QUANTITIES["chosen_loss_mask"]}
  grad = jax.grad(lambda q: rpo({**q, **mask})[0])(floats)
  dpo_grad = jax.grad(lambda c: dpo_loss(c, QUANTITIES["rejected_logps"],
                                         QUANTITIES["ref_chosen_logps"],
                                         QUANTITIES["ref_rejected_logps"])[0])
  np.testing.assert_allclose(grad["chosen_logps"], dpo_grad(QUANTITIES["chosen_logps"]),
                             rtol=1e-6)
  # d(0.5 * NLL)/d logp = -0.5 / 3 on each of the 3 scored tokens
  np.testing.assert_allclose(grad["chosen_token_logps"],
                             -0.5 / 3 * QUANTITIES["chosen_loss_mask"], rtol=1e-6)


def test_nesting_prefixes_and_knobs_win():
  inner = weighted_sum({"ipo": term(ipo_loss, beta=0.1)})
  outer = weighted_sum({"pref": (2.0, inner)})
  loss, metrics = outer(QUANTITIES)
  np.testing.assert_allclose(loss, 2 * 22.5, rtol=1e-6)  # IPO 22.5 (see test_dpo_family)
  np.testing.assert_allclose(metrics["pref/ipo/loss"], 22.5, rtol=1e-6)
  # a knob overrides a same-named quantity; rename=None leaves the argument at its default
  loss, _ = term(dpo_loss, rename={"ref_chosen_logps": None, "ref_rejected_logps": None},
                 reference_free=True)(QUANTITIES)
  np.testing.assert_allclose(loss, 0.6712677647275813, rtol=1e-6)


def test_missing_and_unknown_names_fail_loudly():
  with pytest.raises(TypeError):
    term(sft_loss, rename={"tokens": "x"})
  with pytest.raises(KeyError):
    term(sft_loss, rename={"token_logps": "absent"})(QUANTITIES)


def test_statistics_reach_a_term_inside_a_sum_and_fall_back_to_the_batch():
  # a term that reads the batch mean of chosen_logps: given as a quantity it wins (the
  # objective computed it over the global batch); missing, it is computed from the quantities
  mean = lambda q: {"mean_chosen": jnp.mean(q["chosen_logps"])}
  centred = with_statistics(lambda q: (jnp.sum(q["chosen_logps"] - q["mean_chosen"]), {}),
                            mean)
  total = weighted_sum({"dpo": term(dpo_loss), "centred": (2.0, centred)})
  assert statistics_of(term(dpo_loss)) is None
  assert statistics_of(total)(QUANTITIES) == {"mean_chosen": -7.5}
  np.testing.assert_allclose(total(QUANTITIES)[1]["centred/loss"], 0.0)
  np.testing.assert_allclose(total({**QUANTITIES, "mean_chosen": -8.0})[1]["centred/loss"], 1.0)
  grad = jax.grad(lambda c: centred({**QUANTITIES, "chosen_logps": c})[0])(
      QUANTITIES["chosen_logps"])
  np.testing.assert_allclose(grad, [1.0, 1.0])  # no gradient through the statistic


def _softplus(x):
  return np.logaddexp(0.0, x)


def test_denominators_bind_by_unit_not_by_name():
  # Global counts as an objective gives them: 4 pairs, 7 chosen tokens; "denominator" (the old
  # name, a pair count) must never reach the token loss.
  counts = {"pair_denominator": 4.0, "chosen_loss_mask_denominator": 7.0, "denominator": 2.0}
  rpo = weighted_sum({"dpo": term(dpo_loss, beta=0.1),
                      "nll": (0.5, term(sft_loss, rename=NLL_NAMES))})
  _, metrics = rpo({**QUANTITIES, **counts})
  # h = (1, 0) - (-1, 1) = (2, -1): DPO sums softplus(-beta h) over the 2 rows, / 4 pairs;
  # the NLL sums 1 + 2 + 0.5 over the chosen tokens, / 7 tokens.
  np.testing.assert_allclose(metrics["dpo/loss"], (_softplus(-0.2) + _softplus(0.1)) / 4,
                             rtol=1e-6)
  np.testing.assert_allclose(metrics["nll/nll"], 3.5 / 7, rtol=1e-6)
  np.testing.assert_allclose(metrics["loss"], metrics["dpo/loss"] + 0.5 * 3.5 / 7, rtol=1e-6)


def test_a_token_count_follows_the_mask_a_term_reads():
  other = {"token_logps": "chosen_token_logps", "loss_mask": "other_mask"}
  quantities = {**QUANTITIES, "other_mask": jnp.array([[0, 1, 0, 0], [0, 0, 0, 0]]),
                "other_mask_denominator": 2.0, "chosen_loss_mask_denominator": 7.0}
  np.testing.assert_allclose(term(sft_loss, rename=other)(quantities)[0], 1.0 / 2, rtol=1e-6)
  # an explicit rename wins; None keeps the local count (1 token)
  np.testing.assert_allclose(term(sft_loss, rename={**other, "denominator": None})(
      quantities)[0], 1.0, rtol=1e-6)


def test_a_missing_or_undeclared_count_is_an_error():
  # global counts present but not this mask's: never fall back to a micro-batch's count
  with pytest.raises(KeyError, match="other_mask_denominator"):
    term(sft_loss, rename={"token_logps": "chosen_token_logps", "loss_mask": "other_mask"})(
        {**QUANTITIES, "other_mask": QUANTITIES["chosen_loss_mask"], "pair_denominator": 2.0})
  custom = lambda chosen_logps, denominator=None: (jnp.sum(chosen_logps) / denominator, {})
  with pytest.raises(TypeError, match="does not declare what it counts"):
    term(custom)
  loss, _ = term(custom, rename={"denominator": "pair_denominator"})(
      {**QUANTITIES, "pair_denominator": 5.0})
  np.testing.assert_allclose(loss, -15.0 / 5)
