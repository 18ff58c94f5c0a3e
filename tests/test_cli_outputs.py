"""What `jaxalign train` prints and writes: log lines with --no-progress, the learning rate
in the metrics (its decay following loop.steps), checkpoints on by default (none forced at
step 1), a persistent compilation cache, no TFDS chatter, provenance in config.yaml, and
--print-config."""

import hashlib
import json
import os

import jax
import yaml

from jaxalign.checkpoint import Checkpointer
from jaxalign.cli.main import main
from jaxalign.config import RunConfig, valid_keys
from jaxalign.models import init_params, tiny_gpt2
from jaxalign.training.optim import OptimizerConfig, make_optimizer
from jaxalign.training.state import TrainState
from tests.training import subprocess_runs

STEPS = 4


def _pairs(path, count: int = 24) -> str:
  with open(path, "w") as f:
    for i in range(count):
      f.write(json.dumps({"prompt": f"What is {i}+{i}?", "chosen": f" {2 * i}.",
                          "rejected": f" {2 * i + 1}."}) + "\n")
  return str(path)


def test_a_files_run_logs_lines_lr_provenance_and_checkpoints_quietly(tmp_path):
  data, out, cache = _pairs(tmp_path / "pairs.jsonl"), tmp_path / "run", tmp_path / "xla"
  settings = {"data.source": "files", "data.train_file": data, "data.eval_file": data,
              "data.tokenizer": "bytes", "data.max_length": 64, "data.batch_size": 8,
              "data.eval_batch_size": 8, "model.num_layers": 1, "loop.steps": STEPS,
              "loop.log_every": 2, "optimizer.schedule": "linear",
              "optimizer.learning_rate": 1e-3}
  env = {k: v for k, v in subprocess_runs.ENV.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  env.update(JAXALIGN_COMPILATION_CACHE=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  result = subprocess_runs.run_unchecked(
      subprocess_runs.train_command("dpo", out, settings), env=env)
  assert result.returncode == 0, result.stderr[-3000:]
  printed = result.stdout + result.stderr

  # --no-progress: one line per logged step, with the loss and the learning rate.
  lines = [line for line in result.stdout.splitlines() if line.startswith("step ")]
  assert [line.split()[1] for line in lines if "train/loss=" in line] == ["2/4", "4/4"]
  assert all("train/learning_rate=" in line for line in lines if "train/loss=" in line)
  # The linear decay runs over loop.steps (optimizer.total_steps unset follows it).
  saved = yaml.safe_load((out / "config.yaml").read_text())
  assert saved["optimizer"]["total_steps"] == STEPS
  rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
  rates = {r["step"]: r["train/learning_rate"] for r in rows if "train/learning_rate" in r}
  assert rates.keys() == {2, 4}
  for step, rate in rates.items():  # update number `step` uses the schedule at step - 1
    assert abs(rate - 1e-3 * (1 - (step - 1) / STEPS)) < 1e-9, rates

  # Checkpoints by default (a short run: at its end only), no forced one at step 1.
  assert sorted(os.listdir(out / "checkpoints")) == [str(STEPS)]
  # The compilation cache, and no TFDS / absl build chatter.
  assert cache.is_dir() and any(cache.iterdir())
  for noise in ("Downloading and preparing", "downloaded and prepared", "Generating splits",
                "Using custom data configuration", "Shuffling"):
    assert noise not in printed, noise

  # Provenance: version, commit (when a checkout), command line, the data file's hash.
  prov = saved["provenance"]
  from jaxalign import __version__
  assert prov["jaxalign_version"] == __version__ and "git_commit" in prov
  assert prov["command"].startswith("jaxalign train dpo") and data in prov["command"]
  digest = hashlib.sha256(open(data, "rb").read()).hexdigest()
  assert prov["data_files"][os.path.abspath(data)]["sha256"] == digest


def test_checkpoints_only_on_the_cadence_and_when_forced(tmp_path):
  state = TrainState.create(init_params(tiny_gpt2(), jax.random.PRNGKey(0)),
                            make_optimizer(OptimizerConfig()), seed=0)
  checkpointer = Checkpointer(str(tmp_path / "every3"), save_every=3)
  saved = [step for step in range(1, 8) if checkpointer.save(step, state)]
  assert checkpointer.save(8, state, force=True)
  checkpointer.close()
  assert saved == [3, 6]  # orbax alone would also save step 1 (its first save)
  assert sorted(int(n) for n in os.listdir(tmp_path / "every3") if n.isdigit()) == [3, 6, 8]
  never = Checkpointer(str(tmp_path / "never"), save_every=0)  # only forced saves
  assert not any(never.save(step, state) for step in range(1, 5))
  never.close()


def test_print_config_lists_every_key_resolved_and_writes_nothing(tmp_path, capsys):
  out = tmp_path / "run"
  assert main(["train", "dpo", "--print-config", "--output-dir", str(out),
               "--set", "loop.steps=300", "--set", "optimizer.learning_rate=3e-4"]) == 0
  printed = capsys.readouterr().out.splitlines()
  shown = {line.split(":", 1)[0]: line.split(":", 1)[1].split("#")[0].strip()
           for line in printed}
  leaves = [k for k in valid_keys(RunConfig)
            if not any(other.startswith(k + ".") for other in valid_keys(RunConfig))]
  assert sorted(shown) == sorted(leaves)
  assert shown["optimizer.total_steps"] == "300"  # follows loop.steps
  assert shown["loop.checkpoint_every"] == "50"  # the automatic cadence
  assert shown["optimizer.learning_rate"] == "0.0003" and shown["task"] == "dpo"
  assert shown["output_dir"] == str(out)
  assert not out.exists()
