"""The largest-batch search's logic on a fake planner (peak bytes linear in the batch, no
compile): doubling then bisecting to the resolution of the configured value, halvings when
that value does not fit, and a search that ends at a config error says so."""

import pytest

from jaxalign.config import RunConfig, load_config
from jaxalign.planning import search

HBM = 1000


def _run(task: str, batch: int) -> RunConfig:
  return load_config(RunConfig, None, [f"task={task}", f"data.batch_size={batch}"])


def _fake(monkeypatch, per_row: int, invalid_from: int | None = None):
  planned = []

  def with_batch(run, key, value):
    if invalid_from is not None and value >= invalid_from:
      return None, f"{key}={value}: too large for the test"
    return value, None

  def plan(value, topology, hbm_gib=None):
    planned.append(value)
    peak = per_row * value
    return {"fits": peak <= HBM, "programs": [{"total": peak}]}

  monkeypatch.setattr(search, "with_batch", with_batch)
  monkeypatch.setattr(search, "plan", plan)
  return planned


def test_doubles_then_bisects_to_multiples_of_the_configured_batch(monkeypatch):
  planned = _fake(monkeypatch, per_row=10)  # fits up to 100 rows
  result = search.largest_batch(_run("dpo", 8), "cpu")
  assert (result["largest"], result["smallest_failing"], result["stopped"]) == (96, 104, None)
  assert planned[:5] == [8, 16, 32, 64, 128]  # doubling, then bisecting between 64 and 128
  assert all(row["fits"] == (row["peak_bytes"] <= HBM) for row in result["tried"])


def test_halves_when_the_configured_batch_does_not_fit(monkeypatch):
  _fake(monkeypatch, per_row=100)  # fits up to 10 rows
  result = search.largest_batch(_run("sft", 32), "cpu")
  assert (result["largest"], result["smallest_failing"]) == (8, 16)
  _fake(monkeypatch, per_row=2000)  # nothing fits
  result = search.largest_batch(_run("sft", 12), "cpu")
  assert result["largest"] is None and "odd" in result["stopped"]


def test_a_search_that_ends_at_a_config_error_says_so(monkeypatch):
  _fake(monkeypatch, per_row=1, invalid_from=64)  # everything fits; 64 fails the checks
  result = search.largest_batch(_run("dpo", 8), "cpu")
  assert result["largest"] == 32 and result["smallest_failing"] is None
  assert result["stopped"] == "data.batch_size=64: too large for the test"
  assert "the search stopped there: data.batch_size=64" in search.format_search(result)


@pytest.mark.parametrize("task,key", [("ppo", "ppo.rollout_batch_size"),
                                      ("rloo", "grpo.prompts_per_iteration"),
                                      ("online-dpo", "data.batch_size")])
def test_the_batch_key_of_each_task(task, key):
  assert search.batch_key(RunConfig(task=task)) == key
