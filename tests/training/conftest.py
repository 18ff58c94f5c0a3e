"""A trained tiny reference policy and reward model on the synthetic task, built once."""

import pytest

from jaxalign.config import RunConfig, load_config
from jaxalign.training.runs import run_training


@pytest.fixture(scope="session")
def sft_and_rm(tmp_path_factory):
  root = tmp_path_factory.mktemp("online_base")
  common = ["data.batch_size=32", "loop.log_every=50"]
  run_training(load_config(RunConfig, None, common + [
      "task=sft", f"output_dir={root / 'sft'}", "loop.steps=150", "data.num_train=4096",
      "optimizer.learning_rate=3e-3"]), progress=False)
  rm_eval = run_training(load_config(RunConfig, None, common + [
      "task=rm", f"output_dir={root / 'rm'}", "loop.steps=80",
      f"model.init_from={root / 'sft' / 'model'}", "optimizer.learning_rate=1e-3"]),
      progress=False)
  assert rm_eval["eval/accuracy"] > 0.75
  return {"sft": str(root / "sft" / "model"), "rm": str(root / "rm" / "model"), "root": root}
