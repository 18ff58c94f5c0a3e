"""``jaxalign train`` with ``model.lora.*``: DPO from a Hugging Face folder trains adapters only
over the frozen base (which is the reference), writes the merged ``model/`` and the adapters
alone, and ``jaxalign export`` of the adapters merges them into the base for transformers.
Checked against the HF base weights, a numpy merge of the saved adapters, and transformers'
logits of the export; the LoRA config keys fail at config time with the key named."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxalign.models import Transformer, load_model, load_pretrained
from tests import hf_reference
from tests import model_folders as mf

RANK, ALPHA = 4, 8.0
COMMON = ["--no-progress", "--set", "data.source=files", "--set", "data.max_length=64",
          "--set", "data.batch_size=8", "--set", "data.eval_batch_size=8",
          "--set", "loop.log_every=1", "--set", "loop.checkpoint_every=0"]


def _flat(tree, prefix=""):
  if isinstance(tree, dict):
    return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}/").items()}
  return {prefix.rstrip("/"): np.asarray(tree)}


@pytest.mark.parametrize("reference", ["in_step", "cached"])
def test_lora_dpo_from_a_hf_folder_merges_and_exports(hf_model_dirs, tmp_path, reference):
  import transformers as tf
  hf = mf.hf_folder(hf_model_dirs, "llama", tmp_path / "llama")
  prefs = mf.write_jsonl(tmp_path / "prefs.jsonl", mf.preference_rows(32))
  run = tmp_path / "run"
  result = mf.jaxalign(
      "train", "dpo", "--output-dir", run, "--set", f"model.path={hf}",
      "--set", f"data.train_file={prefs}", "--set", f"data.eval_file={prefs}",
      "--set", f"model.lora.rank={RANK}", "--set", f"model.lora.alpha={ALPHA}",
      "--set", "model.lora.targets=q_proj,v_proj", "--set", f"loss.reference={reference}",
      "--set", "loop.steps=4", "--set", "optimizer.learning_rate=5e-2", *COMMON)

  # The adapter count, from transformers' own config: q and v of every layer.
  hf_config = tf.AutoConfig.from_pretrained(hf)
  d, layers = hf_config.hidden_size, hf_config.num_hidden_layers
  head = d // hf_config.num_attention_heads
  q_out, v_out = hf_config.num_attention_heads * head, hf_config.num_key_value_heads * head
  expected = layers * ((d * RANK + RANK * q_out) + (d * RANK + RANK * v_out))
  assert f"lora: {expected:,} adapter params" in result.stdout

  # Step 0 is the reference itself (B = 0): the DPO loss is log 2 exactly.
  with open(run / "metrics.jsonl") as f:
    losses = [line["train/loss"] for line in map(json.loads, f) if "train/loss" in line]
  assert losses[0] == pytest.approx(np.log(2), abs=1e-6)
  assert losses[-1] < losses[0]

  meta = json.loads((run / "adapters" / "jaxalign_config.json").read_text())
  assert meta["kind"] == "lora_adapters" and meta["config"]["lora"]["rank"] == RANK
  adapters = load_file(str(run / "adapters" / "params.safetensors"))
  assert sorted({k.split("/")[-2] for k in adapters}) == ["q_proj", "v_proj"]
  assert {k.split("/")[-1] for k in adapters} == {"a", "b"}

  # model/: the base everywhere but q and v, which are W + A B alpha / r (a numpy merge).
  _, base = load_pretrained(hf)
  config, merged, kind = load_model(str(run / "model"))
  assert kind == "policy" and config.lora is None
  base, merged = _flat(base), _flat(merged)
  assert base.keys() == merged.keys()
  moved = 0.0
  for name, value in merged.items():
    projection = name.split("/")[-2] if name.endswith("kernel") else None
    if projection in ("q_proj", "v_proj"):
      prefix = name.rsplit("/", 1)[0]
      a, b = adapters[f"{prefix}/a"].astype(np.float64), adapters[f"{prefix}/b"]
      want = base[name] + a @ b * (ALPHA / RANK)
      np.testing.assert_allclose(value, want, atol=1e-6, rtol=1e-6)
      moved = max(moved, float(np.abs(value - base[name]).max()))
    else:
      np.testing.assert_array_equal(value, base[name], err_msg=name)
  assert moved > 1e-4  # the adapters trained

  # export --model adapters/: the base rebuilt from run_config.yaml, merged, for transformers.
  out = tmp_path / "export"
  exported = json.loads(mf.jaxalign("export", "--model", run / "adapters", "--hf", out).stdout)
  assert exported["merged_lora"] == {"rank": RANK, "alpha": ALPHA}
  tokens, mask = hf_reference.padded_batch(0, [12, 7], 12, "right")
  ours = np.asarray(Transformer(config).apply(
      {"params": load_model(str(run / "model"))[1]}, jnp.asarray(tokens),
      attention_mask=jnp.asarray(mask)))
  theirs = hf_reference.hf_logits(hf_reference.load_hf(str(out)), tokens, mask)
  real = mask.astype(bool)
  np.testing.assert_allclose(theirs[real], ours[real], atol=1e-4, rtol=1e-4)


def test_lora_runs_equal_across_reference_modes_and_layer_layouts(tmp_path):
  """One LoRA DPO run two ways (reference in the step; cached, with scan_layers):
  the same losses and eval (the base is the reference in each)."""
  runs = {}
  for name, sets in {"in_step": ["loss.reference=in_step"],
                     "cached_scan": ["loss.reference=cached", "model.scan_layers=true"]}.items():
    args = [a for s in sets for a in ("--set", s)]
    mf.jaxalign("train", "dpo", "--output-dir", tmp_path / name, "--no-progress",
                "--set", "model.lora.rank=4", "--set", "loop.steps=3",
                "--set", "loop.log_every=1", "--set", "loop.checkpoint_every=0",
                "--set", "data.num_train=32", "--set", "data.num_eval=16",
                "--set", "data.batch_size=8", "--set", "optimizer.learning_rate=3e-2",
                "--set", "model.num_layers=2", *args)
    with open(tmp_path / name / "metrics.jsonl") as f:
      losses = [line["train/loss"] for line in map(json.loads, f) if "train/loss" in line]
    runs[name] = losses, json.loads((tmp_path / name / "eval.json").read_text())
  (a, eval_a), (b, eval_b) = runs["in_step"], runs["cached_scan"]
  assert len(a) == 3 and abs(a[1] - np.log(2)) > 1e-4  # the adapters moved
  assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
  for key in ("eval/loss", "eval/rewards/accuracies", "eval/rewards/margins"):
    assert eval_a[key] == pytest.approx(eval_b[key], rel=1e-4, abs=1e-5), key


@pytest.mark.parametrize("sets, message", [
    (["model.lora.rank=4"], "model.lora is not supported for rm yet"),
    (["model.lora.rank=-1"], "model.lora.rank must be an integer >= 0"),
    (["model.lora.rank=4", "model.lora.targets=q_proj,wq"], "model.lora: lora targets ['wq']"),
    (["model.lora.rank=4", "model.lora.dropout=1.5"], "model.lora: lora dropout must be"),
])
def test_lora_config_errors_name_the_key(tmp_path, sets, message):
  task = "rm" if "not supported" in message else "dpo"
  args = [a for s in sets for a in ("--set", s)]
  result = mf.jaxalign("train", task, "--output-dir", tmp_path / "run", *args, check=False)
  assert result.returncode == 2
  assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
  assert not (tmp_path / "run").exists()  # before anything is written


def test_lora_adapters_count_from_the_config():
  """The trainable count the CLI prints equals rank x (in + out) per targeted projection."""
  from jaxalign.config.schema import LoraSpec
  from jaxalign.models import init_lora, lora_param_count, tiny_gpt2
  spec = LoraSpec(rank=2, targets="q_proj, down_proj")
  config = tiny_gpt2(lora=spec.config())
  adapters = init_lora(config, jax.random.PRNGKey(0))
  d, f, n = config.embed_dim, config.mlp_dim, config.num_heads * config.head_dim
  assert lora_param_count(adapters) == config.num_layers * 2 * ((d + n) + (f + d))
  assert LoraSpec().config() is None and LoraSpec(rank=3).config().targets[0] == "q_proj"
