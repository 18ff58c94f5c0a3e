"""Every bad checkpoint folder raises CheckpointError naming the file and the key."""

import json
import os
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from jaxalign.models import CheckpointError, Transformer, load_pretrained
from tests import hf_reference


@pytest.fixture
def gpt2_copy(hf_model_dirs, tmp_path):
  path = str(tmp_path / "gpt2")
  shutil.copytree(hf_model_dirs["gpt2"], path)
  return path


def _edit_config(path, **changes):
  cfg_path = os.path.join(path, "config.json")
  with open(cfg_path) as f:
    cfg = json.load(f)
  cfg.update(changes)
  with open(cfg_path, "w") as f:
    json.dump(cfg, f)


def _edit_tensors(path, edit):
  file = os.path.join(path, "model.safetensors")
  tensors = load_file(file)
  edit(tensors)
  save_file(tensors, file)
  return file


def test_unknown_model_type_names_the_file_and_key(gpt2_copy):
  _edit_config(gpt2_copy, model_type="bloom")
  with pytest.raises(CheckpointError, match=r"config\.json.*'bloom'.*model_type"):
    load_pretrained(gpt2_copy)


def test_missing_tensor_names_the_key(gpt2_copy):
  _edit_tensors(gpt2_copy, lambda t: t.pop("transformer.h.1.mlp.c_fc.weight"))
  with pytest.raises(CheckpointError, match=r"transformer\.h\.1\.mlp\.c_fc\.weight"):
    load_pretrained(gpt2_copy)


def test_shape_mismatch_names_file_key_and_shapes(gpt2_copy):
  def shrink(t):
    t["transformer.ln_f.weight"] = t["transformer.ln_f.weight"][:-1]
  file = _edit_tensors(gpt2_copy, shrink)
  with pytest.raises(CheckpointError) as err:
    load_pretrained(gpt2_copy)
  message = str(err.value)
  assert file in message and "transformer.ln_f.weight" in message
  assert "(31,)" in message and "(32,)" in message


def test_folder_without_weights(gpt2_copy):
  os.remove(os.path.join(gpt2_copy, "model.safetensors"))
  with pytest.raises(CheckpointError, match="no weights found"):
    load_pretrained(gpt2_copy)


def test_folder_without_config(tmp_path):
  with pytest.raises(CheckpointError, match=r"config\.json: not found"):
    load_pretrained(str(tmp_path))


def test_sharded_checkpoint_loads_the_same_params(hf_model_dirs, tmp_path):
  model = hf_reference.load_hf(hf_model_dirs["llama"])
  model.save_pretrained(str(tmp_path), max_shard_size="20KB")
  assert os.path.exists(tmp_path / "model.safetensors.index.json")
  assert len([f for f in os.listdir(tmp_path) if f.endswith(".safetensors")]) > 1
  config, sharded = load_pretrained(str(tmp_path))
  _, single = load_pretrained(hf_model_dirs["llama"])
  tokens = np.arange(3, 13)[None]
  np.testing.assert_array_equal(
      Transformer(config).apply({"params": sharded}, tokens),
      Transformer(config).apply({"params": single}, tokens))


def test_sharded_checkpoint_with_a_missing_shard(hf_model_dirs, tmp_path):
  model = hf_reference.load_hf(hf_model_dirs["llama"])
  model.save_pretrained(str(tmp_path), max_shard_size="20KB")
  shard = sorted(f for f in os.listdir(tmp_path) if f.endswith(".safetensors"))[-1]
  os.remove(tmp_path / shard)
  with pytest.raises(CheckpointError, match=shard):
    load_pretrained(str(tmp_path))


def test_bf16_load(hf_model_dirs):
  config, params = load_pretrained(hf_model_dirs["qwen2"], dtype="bfloat16")
  assert config.param_dtype == "bfloat16" and config.dtype == "bfloat16"
  assert params["embed"].dtype == np.dtype("bfloat16")
  logits = Transformer(config).apply({"params": params}, np.arange(3, 9)[None])
  assert logits.dtype == np.float32 and np.isfinite(np.asarray(logits)).all()
