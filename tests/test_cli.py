"""The jaxalign command: user errors exit non-zero with a clear message; the demo learns."""

import json
import os

import pytest

from jaxalign.cli.demo import DemoConfig, run_demo
from jaxalign.cli.main import main


def test_bad_config_key_suggests_the_nearest(tmp_path, capsys):
  code = main(["train", "dpo", "--output-dir", str(tmp_path), "--set", "loss.bta=0.2"])
  assert code == 2
  err = capsys.readouterr().err
  assert "unknown config key 'loss.bta'" in err and "did you mean 'loss.beta'" in err


def test_bad_key_in_a_config_file(tmp_path, capsys):
  path = tmp_path / "run.yaml"
  path.write_text("optimizer:\n  learning_rat: 0.1\n")
  assert main(["train", "sft", "--config", str(path)]) == 2
  err = capsys.readouterr().err
  assert str(path) in err and "optimizer.learning_rate" in err


def test_missing_data_file(tmp_path, capsys):
  code = main(["train", "dpo", "--output-dir", str(tmp_path), "--set", "data.source=files",
               "--set", f"data.train_file={tmp_path / 'nope.jsonl'}"])
  assert code == 2
  assert "nope.jsonl does not exist" in capsys.readouterr().err


def test_unknown_loss_name(tmp_path, capsys):
  with pytest.raises(SystemExit) as exit_info:
    main(["train", "dpo", "--loss", "dpoo"])
  assert exit_info.value.code != 0
  assert "invalid choice: 'dpoo'" in capsys.readouterr().err
  assert main(["train", "dpo", "--output-dir", str(tmp_path), "--set", "loss.name=dpoo"]) == 2
  assert "unknown loss 'dpoo'" in capsys.readouterr().err


def test_demo_trainers_learn_on_the_synthetic_task(tmp_path):
  demo = DemoConfig(output_dir=str(tmp_path), sft_steps=150, rm_steps=80, dpo_steps=60,
                    num_eval_prompts=128, losses=(("dpo", 0.1),), online_dpo_steps=0,
                    ppo_iterations=0, grpo_iterations=0)
  results = run_demo(demo)
  assert results["sft"]["explicit_rm_accuracy"] > 0.75  # chance is 0.5
  assert results["dpo"]["gold_reward"] > results["sft"]["gold_reward"] + 1.0
  assert results["dpo"]["implicit_accuracy"] > 0.6
  assert 0.0 < results["dpo"]["kl"] < 100.0
  assert abs(results["sft"]["kl"]) < 1e-4  # the reference against itself
  assert os.path.getsize(tmp_path / "demo.png") > 10_000
  with open(tmp_path / "results.json") as f:
    saved = json.load(f)
  for name in results:
    assert saved[name] == pytest.approx(results[name])
  for stage in ("sft", "rm", "dpo"):
    assert (tmp_path / stage / "config.yaml").exists()
    assert (tmp_path / stage / "metrics.jsonl").exists()


def test_reproduce_runs_an_experiment(tmp_path, capsys):
  assert main(["reproduce", "ipo_vs_dpo_bandit", "--quick", "--output-dir", str(tmp_path)]) == 0
  assert (tmp_path / "figure.png").exists() and (tmp_path / "numbers.json").exists()


def test_packing_for_a_task_it_does_not_pack(tmp_path, capsys):
  code = main(["train", "dpo", "--output-dir", str(tmp_path / "run"), "--set",
               "data.packing=true"])
  assert code == 2
  err = capsys.readouterr().err.strip()
  assert "data.packing packs sft and rm batches, not dpo" in err and len(err.splitlines()) == 1
  assert not (tmp_path / "run").exists()
