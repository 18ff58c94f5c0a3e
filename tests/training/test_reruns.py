"""``jaxalign train`` into an existing output_dir, through the CLI (``main``, in process): a finished run rerun is a
no-op, a changed config is refused naming the keys (unless --overwrite / --resume), more
steps resume, and a run without checkpoints starts fresh without duplicate metrics rows."""

import json

import pytest
import yaml

from jaxalign.cli.main import main

RUN = {"data.num_train": 64, "data.num_eval": 16, "data.batch_size": 8,
       "data.eval_batch_size": 16, "model.num_layers": 1, "loop.steps": 4, "loop.log_every": 2}


def _steps(output_dir, key="train/loss"):
  rows = [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]
  return [r["step"] for r in rows if key in r]


@pytest.fixture
def train(capsys):
  """``train(output_dir, settings, *flags)``: ``jaxalign train dpo`` in this process;
  returns (exit status, stdout, stderr)."""
  def run(output_dir, settings, *flags):
    sets = [arg for key, value in settings.items() for arg in ("--set", f"{key}={value}")]
    code = main(["train", "dpo", "--no-progress", "--output-dir", str(output_dir), *flags,
                 *sets])
    captured = capsys.readouterr()
    return code, captured.out, captured.err
  return run


def ok(result) -> str:
  assert result[0] == 0, result[2][-2000:]
  return result[1]


def error(result) -> str:
  code, _, err = result
  assert code == 2, (code, err[-2000:])
  lines = err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("jaxalign: error: "), err
  return lines[0]


def test_a_finished_run_rerun_is_a_no_op_and_another_config_is_refused(tmp_path, train):
  out = tmp_path / "run"
  ok(train(out, RUN))
  saved = {name: (out / name).read_bytes() for name in ("eval.json", "metrics.jsonl",
                                                        "config.yaml")}
  assert json.loads(saved["eval.json"])["eval/loss"] > 0

  again = ok(train(out, RUN))
  assert "run complete" in again and "eval/loss=" in again
  for name, content in saved.items():  # nothing rewritten (eval.json used to become {})
    assert (out / name).read_bytes() == content, name

  # Another loss and data size: refused before any data is built, naming both keys.
  changed = dict(RUN, **{"data.num_train": 48})
  line = error(train(out, changed, "--loss", "ipo"))
  assert "loss.name: 'dpo' -> 'ipo'" in line and "data.num_train: 64 -> 48" in line
  assert "--overwrite" in line and "--resume" in line
  for name, content in saved.items():
    assert (out / name).read_bytes() == content, name

  # --overwrite starts fresh: the old outputs are gone, each step is logged once.
  fresh = ok(train(out, changed, "--loss", "ipo", "--overwrite"))
  assert "starting fresh" in fresh
  assert _steps(out) == [2, 4]
  assert yaml.safe_load((out / "config.yaml").read_text())["loss"]["name"] == "ipo"


def test_more_steps_resume_and_resume_forces_a_changed_config(tmp_path, train):
  out = tmp_path / "run"
  ok(train(out, RUN))  # checkpoints on by default: one at step 4
  longer = ok(train(out, dict(RUN, **{"loop.steps": 8})))
  assert "resuming from step 4" in longer
  assert _steps(out) == [2, 4, 6, 8] and _steps(out, "eval/loss") == [4, 8]
  assert yaml.safe_load((out / "config.yaml").read_text())["loop"]["steps"] == 8

  # Steps below the checkpoint: an error, not a "finished" run with more steps in it.
  line = error(train(out, RUN))
  assert "loop.steps=4 is below the checkpoint at step 8" in line

  # A new learning rate continues the old run only with --resume.
  lower = dict(RUN, **{"loop.steps": 10, "optimizer.learning_rate": 5e-5})
  line = error(train(out, lower))
  assert "optimizer.learning_rate: 0.0001 -> 5e-05" in line and "from step 8" in line
  forced = ok(train(out, lower, "--resume"))
  assert "resuming from step 8" in forced
  assert _steps(out) == [2, 4, 6, 8, 10]


def test_without_checkpoints_a_rerun_starts_fresh_without_duplicate_steps(tmp_path, train):
  out = tmp_path / "run"
  no_checkpoints = dict(RUN, **{"loop.checkpoint_every": 0})
  ok(train(out, no_checkpoints))
  (out / "eval.json").unlink()  # as if the run had died before its end
  rerun = ok(train(out, no_checkpoints))
  assert "starting fresh (no checkpoint to resume from" in rerun
  assert _steps(out) == [2, 4]  # not [2, 4, 2, 4]

  line = error(train(out, dict(no_checkpoints, **{"loop.steps": 6})))
  assert "no checkpoint to continue from" in line and "--overwrite" in line


def test_outputs_without_a_config_are_not_mixed_into(tmp_path, train):
  out = tmp_path / "run"
  out.mkdir()
  (out / "metrics.jsonl").write_text('{"step": 1}\n')
  line = error(train(out, RUN))
  assert "no config.yaml" in line and "--overwrite" in line
  assert (out / "metrics.jsonl").read_text() == '{"step": 1}\n'


def test_changed_inputs_are_not_resumed_silently(tmp_path, train):
  import jax

  from jaxalign.config import RunConfig, load_config
  from jaxalign.models import init_params
  from jaxalign.training import setup
  from tests.test_cli_outputs import _pairs
  base = load_config(RunConfig, None, ["model.num_layers=1", "data.source=files",
                                       "data.tokenizer=bytes"])
  config = setup.model_config(base, setup.vocab_overrides(base))
  policy = str(tmp_path / "policy")
  save = lambda seed: setup.save_run_model(base, policy, config,
                                           init_params(config, jax.random.PRNGKey(seed)))
  save(0)
  data = _pairs(tmp_path / "pairs.jsonl")
  out = tmp_path / "run"
  settings = dict(RUN, **{"data.source": "files", "data.train_file": data,
                          "data.eval_file": data, "data.tokenizer": "bytes",
                          "data.max_length": 64, "data.eval_batch_size": 8,
                          "model.init_from": policy})
  settings.pop("data.num_train"), settings.pop("data.num_eval")
  ok(train(out, settings))
  assert "run complete" in ok(train(out, settings))
  original = open(data).read()
  with open(data, "a") as f:  # an edited data file: same path, other rows
    f.write(json.dumps({"prompt": "new?", "chosen": " yes", "rejected": " no"}) + "\n")
  line = error(train(out, settings))
  assert "pairs.jsonl: contents changed" in line and "--overwrite" in line
  with open(data, "w") as f:
    f.write(original)  # the same contents again: not a change
  save(1)  # the start policy trained again (e.g. a new SFT run) into the same folder
  line = error(train(out, settings))
  assert f"model.init_from={policy}: the folder changed" in line
  assert "contents changed" not in line
