"""A trained tiny reference policy and reward model on the synthetic task, built once per test
session: pytest-xdist workers share one copy (the first to take the lock trains it, the
others wait and read it)."""

import fcntl
import shutil

import pytest

from jaxalign.config import RunConfig, load_config
from jaxalign.training.runs import run_training


def _train_sft_and_rm(root) -> None:
  common = ["data.batch_size=32", "loop.log_every=50"]
  run_training(load_config(RunConfig, None, common + [
      "task=sft", f"output_dir={root / 'sft'}", "loop.steps=150", "data.num_train=4096",
      "optimizer.learning_rate=3e-3"]), progress=False)
  rm_eval = run_training(load_config(RunConfig, None, common + [
      "task=rm", f"output_dir={root / 'rm'}", "loop.steps=80",
      f"model.init_from={root / 'sft' / 'model'}", "optimizer.learning_rate=1e-3"]),
      progress=False)
  assert rm_eval["eval/accuracy"] > 0.75


@pytest.fixture(scope="session")
def sft_and_rm(tmp_path_factory, worker_id):
  # Under xdist every worker's basetemp sits in one shared folder; alone, basetemp is ours.
  shared = tmp_path_factory.getbasetemp() if worker_id == "master" else \
      tmp_path_factory.getbasetemp().parent
  root, done = shared / "online_base", shared / "online_base.done"
  with open(shared / "online_base.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      if not done.exists():
        shutil.rmtree(root, ignore_errors=True)  # a failed first try
        _train_sft_and_rm(root)
        done.touch()
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)
  return {"sft": str(root / "sft" / "model"), "rm": str(root / "rm" / "model"), "root": root}
