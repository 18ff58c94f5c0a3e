"""The TPU path of ``jaxalign plan``: a compile for v5e:2x2 by libtpu, no TPU needed."""

import json
import subprocess
import sys

import pytest


def test_dpo_on_v5e_2x2(tmp_path):
  pytest.importorskip("libtpu")
  out = tmp_path / "plan.json"
  result = subprocess.run(
      [sys.executable, "-m", "jaxalign.cli.main", "plan", "dpo", "--topology", "v5e:2x2",
       "--json", str(out), "--set", "model.preset=tiny_gpt2", "--set", "data.max_length=64",
       "--set", "data.batch_size=8", "--set", "mesh.data=1", "--set", "mesh.fsdp=4"],
      capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(out.read_text())
  assert report["platform"] == "tpu" and report["num_devices"] == 4
  assert report["hbm_bytes_per_device"] == 16 * 2 ** 30 and report["fits"] is True
  assert report["programs"][0]["arguments"]["params"] > 0
