"""Two processes x 4 CPU devices, joined by ``jax.distributed`` over gloo, train DPO through
the real entry point (``python -m jaxalign.cli.main train dpo``) on one 8-device mesh, from
JSONL preference files, checkpoint, stop, resume in a second launch, and end with the params
of a single-process 8-device run of the same seed.

What this covers of the multi-host path: ``initialize_distributed`` from the
``JAXALIGN_*`` environment (``JAXALIGN_CPU_COLLECTIVES=gloo`` set before initialize); the
TFDS dataset built once under the shared output dir (process 0 first, then the others reuse
it); each
process feeding only its own rows of every global batch (``BatchIterator`` +
``make_array_from_process_local_data``); the cached reference log-probs and the eval batches
placed as global arrays; orbax saving and restoring with both processes taking part, onto a
different mesh shape (the resumed launch uses ``fsdp=8``, so FSDP shards span the two
processes); the final params gathered across processes before process 0 writes ``model/``;
only process 0 writing config, metrics and eval files.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest

from jaxalign.models import load_model
from tests.parallel import processes

pytestmark = pytest.mark.slow  # three launches of two processes: make test-all

FIRST_STEPS, TOTAL_STEPS, EVERY = 6, 10, 3
# Mesh of the first launch and of the single-process reference; the resumed launch uses
# RESUME_MESH (a checkpoint restores onto any mesh shape).
MESH = {"mesh.data": 2, "mesh.fsdp": 4}
RESUME_MESH = {"mesh.data": 1, "mesh.fsdp": 8}
# AdamW, but with eps well above the float noise of near-zero gradients: with eps=1e-8 an
# entry whose gradient is ~1e-9 of reduction-order noise moves by +-lr per step, which says
# nothing about distributed correctness (same reasoning as tests/training/test_step_invariance).
SETTINGS = {"loop.checkpoint_every": EVERY, "loop.log_every": 1, "model.num_layers": 1,
            "data.source": "files", "data.tokenizer": "bytes", "data.max_length": 64,
            "data.batch_size": 32, "data.eval_batch_size": 32,
            "optimizer.learning_rate": 1e-3, "optimizer.eps": 1e-3}


def _command(output_dir, steps: int, mesh: dict, files: dict) -> list[str]:
  return processes.train_command("dpo", output_dir,
                                 dict(SETTINGS, **files, **mesh, **{"loop.steps": steps}))


def _write_pairs(path, count: int, seed: int) -> str:
  """Arithmetic preference pairs (byte-level tokenizer: no tokenizer files needed)."""
  rng = np.random.default_rng(seed)
  with open(path, "w") as f:
    for a, b, wrong in zip(rng.integers(0, 100, count), rng.integers(0, 100, count),
                           rng.integers(1, 10, count)):
      f.write(json.dumps({"prompt": f"What is {a}+{b}?", "chosen": f" {a + b}.",
                          "rejected": f" {a + b + wrong}."}) + "\n")
  return str(path)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
  reason = processes.gloo_unavailable()
  if reason:
    pytest.skip(reason)
  root = tmp_path_factory.mktemp("multiprocess")
  multi, single = root / "two_processes", root / "one_process"
  files = {"data.train_file": _write_pairs(root / "train.jsonl", 128, seed=0),
           "data.eval_file": _write_pairs(root / "eval.jsonl", 32, seed=1)}
  # The reference runs alongside the first launch (the gloo processes wait on each other).
  reference = processes.start(_command(single, TOTAL_STEPS, MESH, files), processes.env(8))
  first = processes.finish(processes.two_processes(_command(multi, FIRST_STEPS, MESH, files)),
                           "first launch")
  second = processes.finish(processes.two_processes(
      _command(multi, TOTAL_STEPS, RESUME_MESH, files)), "resumed launch")
  processes.finish([reference], "single-process reference")
  return {"multi": multi, "single": single, "first": first, "second": second}


def _metrics(path) -> list[dict]:
  with open(path / "metrics.jsonl") as f:
    return [json.loads(line) for line in f]


def test_resumes_from_the_checkpoint_of_the_first_launch(runs):
  assert "data: train 128 rows" in runs["first"][0]
  assert "data:" not in runs["first"][1], "only process 0 prints"
  assert "resuming from step" not in runs["first"][0]
  assert f"resuming from step {FIRST_STEPS}" in runs["second"][0]
  assert "resuming from step" not in runs["second"][1], "only process 0 prints"
  steps = sorted(int(name) for name in os.listdir(runs["multi"] / "checkpoints")
                 if name.isdigit())
  assert FIRST_STEPS in steps and TOTAL_STEPS in steps


def test_final_params_equal_the_single_process_run(runs):
  _, expected, _ = load_model(str(runs["single"] / "model"))
  _, actual, _ = load_model(str(runs["multi"] / "model"))
  paths = jax.tree_util.tree_leaves_with_path(expected)
  assert len(paths) == len(jax.tree_util.tree_leaves(actual))
  for (path, a), b in zip(paths, jax.tree_util.tree_leaves(actual)):
    np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=0, atol=1e-5,
                               err_msg=jax.tree_util.keystr(path))


def test_train_and_eval_metrics_match_and_only_process_0_wrote_them(runs):
  multi, single = _metrics(runs["multi"]), _metrics(runs["single"])
  train = lambda rows: [(r["step"], r["train/loss"]) for r in rows if "train/loss" in r]
  # Each step logged once (process 0 only; the resumed launch appends steps 7..10).
  assert [s for s, _ in train(multi)] == list(range(1, TOTAL_STEPS + 1))
  np.testing.assert_allclose([l for _, l in train(multi)], [l for _, l in train(single)],
                             atol=1e-5)
  with open(runs["multi"] / "eval.json") as f:
    got = json.load(f)
  with open(runs["single"] / "eval.json") as f:
    want = json.load(f)
  assert got.keys() == want.keys() and "eval/rewards/accuracies" in got
  for key in want:
    assert abs(got[key] - want[key]) < 1e-4, key
