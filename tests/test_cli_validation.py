"""`jaxalign train` validates the whole run before any data is built or anything is written:
each bad config exits 2 with one line naming the key, and no output_dir appears."""

import json

import pytest

from jaxalign.cli.main import main


@pytest.fixture
def folders(tmp_path):
  """A Hugging Face-looking folder, a jaxalign-looking one (policy) and a data file."""
  hf, ours = tmp_path / "hf_model", tmp_path / "jaxalign_model"
  hf.mkdir()
  ours.mkdir()
  (hf / "config.json").write_text("{}")
  (ours / "jaxalign_config.json").write_text(json.dumps({"kind": "policy", "config": {}}))
  data = tmp_path / "pairs.jsonl"
  data.write_text(json.dumps({"prompt": "q", "chosen": " a", "rejected": " b"}) + "\n")
  return {"hf": str(hf), "ours": str(ours), "data": str(data), "missing": str(tmp_path / "nope")}


FILES = ["data.source=files", "data.train_file={data}", "data.eval_file={data}"]
CASES = [  # (task, overrides, what the message must contain)
    ("sft", ["model.path={ours}"], ["model.path", "did you mean model.init_from"]),
    ("dpo", ["model.init_from={hf}"], ["model.init_from", "did you mean model.path"]),
    ("dpo", ["model.path={missing}"], ["model.path", "does not exist"]),
    ("dpo", ["model.init_from={missing}"], ["model.init_from", "does not exist"]),
    ("dpo", ["model.path={hf}", "model.init_from={ours}"], ["model.path", "model.init_from",
                                                            "not both"]),
    ("dpo", ["model.reference_from={hf}"], ["model.reference_from", "did you mean"]),
    ("dpo", ["loss.name=simpoo"], ["loss.name", "did you mean 'simpo'"]),
    ("online-dpo", ["loss.name=ipoo", "online.labeller=gold"], ["loss.name",
                                                                "did you mean 'ipo'"]),
    ("dpo", ["data.batch_size=10", "loop.micro_batches=4"], ["data.batch_size=10",
                                                             "loop.micro_batches=4"]),
    ("sft", ["model.compute_dtype=bf16"], ["model.compute_dtype", "did you mean 'bfloat16'"]),
    ("sft", ["model.param_dtype=fp32"], ["model.param_dtype", "did you mean 'float32'"]),
    ("sft", ["optimizer.learning_rate=-1e-4"], ["optimizer.learning_rate"]),
    ("sft", ["optimizer.learning_rate=0"], ["optimizer.learning_rate"]),
    ("sft", ["optimizer.warmup_steps=-1"], ["optimizer.warmup_steps"]),
    ("sft", ["optimizer.b2=1.0"], ["optimizer.b2"]),
    ("rm", ["loop.steps=0"], ["loop.steps"]),
    ("rm", ["loop.log_every=0"], ["loop.log_every"]),
    ("rm", ["loop.checkpoint_every=-5"], ["loop.checkpoint_every"]),
    ("rm", ["data.batch_size=0"], ["data.batch_size"]),
    ("rm", ["data.eval_batch_size=0"], ["data.eval_batch_size"]),
    ("dpo", ["loss.beta=0"], ["loss.beta"]),
    ("dpo", ["loss.beta=-0.1"], ["loss.beta"]),
    ("dpo", ["data.sample_temperature=0"], ["data.sample_temperature"]),
    ("dpo", ["data.response_shift=1.5"], ["data.response_shift", "[0, 1]"]),
    ("dpo", ["data.sft_on_chosen=true"], ["data.sft_on_chosen", "task=sft"]),
    ("online-dpo", ["online.labeller=gold", "online.temperature=0"], ["online.temperature"]),
    ("online-dpo", ["online.labeller=gold", *FILES], ["online.labeller=gold",
                                                      "data.source=synthetic"]),
    ("online-dpo", ["online.labeller=gold", "online.max_new_tokens=600"],
     ["online.max_new_tokens", "data.max_length"]),
    ("ppo", [], ["online.reward_model"]),
    ("ppo", ["online.reward_model={ours}", "ppo.temperature=0"], ["ppo.temperature"]),
    ("ppo", ["online.reward_model={ours}"], ["online.reward_model", "reward model"]),
    ("ppo", ["online.reward_model={hf}"], ["online.reward_model", "did you mean"]),
    ("sft", ["data.source=files"], ["data.train_file"]),
    ("sft", ["data.source=files", "data.train_file={missing}", "data.eval_file={data}"],
     ["data.train_file", "does not exist"]),
]


@pytest.mark.parametrize("task, overrides, expected", CASES,
                         ids=[f"{c[0]}:{' '.join(c[1]) or 'defaults'}" for c in CASES])
def test_bad_run_exits_2_naming_the_key_before_anything_is_written(
    tmp_path, capsys, folders, task, overrides, expected):
  out = tmp_path / "run"
  sets = [arg for o in overrides for arg in ("--set", o.format(**folders))]
  assert main(["train", task, "--no-progress", "--output-dir", str(out), *sets]) == 2
  captured = capsys.readouterr()
  lines = captured.err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("jaxalign: error: "), captured.err
  for text in expected:
    assert text in lines[0], lines[0]
  assert not out.exists()
  assert "data:" not in captured.out  # no data was built
