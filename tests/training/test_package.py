"""``jaxalign.training`` is a real package: every name the docs give imports from it, in any
import order (no circular import with ``jaxalign.config``), and a wheel ships it."""

import ast
import glob
import os
import re
import subprocess
import sys

import pytest

import jaxalign.config
import jaxalign.training

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The names the issue and docs/training.md ("Steps (`jaxalign.training`)") give.
NAMED = ("TrainState", "make_train_step", "make_eval_step", "SFTObjective",
         "RewardModelObjective", "PreferenceObjective", "fit", "LoopConfig", "OptimizerConfig",
         "make_optimizer", "preference_loss", "LOSS_NAMES", "run_training", "run_ppo", "PPOSpec")


def _public_names_of_training_modules() -> dict[str, str]:
  names = {}
  for path in glob.glob(os.path.join(ROOT, "jaxalign", "training", "*.py")):
    for node in ast.parse(open(path).read()).body:
      targets = ([node.name] if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else
                 [t.id for t in getattr(node, "targets", []) if isinstance(t, ast.Name)])
      names.update({t: os.path.basename(path) for t in targets if not t.startswith("_")})
  return names


def _names_in_docs() -> set[str]:
  """Names of jaxalign/training modules that README.md and docs/*.md give as code: a code
  span that is, or calls, a public name (``TrainState``, ``make_train_step(objective)``), or
  ``from jaxalign.training import ...`` in a python block; not names that ``jaxalign.config``
  exports (its ``LossSpec``)."""
  text = "".join(open(p).read() for p in [os.path.join(ROOT, "README.md")]
                 + glob.glob(os.path.join(ROOT, "docs", "*.md")))
  blocks = re.findall(r"```python\n(.*?)```", text, re.S)
  prose = re.sub(r"```.*?```", "", text, flags=re.S)
  found = {m.group(1) for span in re.findall(r"`([^`]+)`", prose)
           for m in [re.fullmatch(r"([A-Za-z_]\w*)(\(.*)?", span.strip(), re.S)] if m}
  for block in blocks:
    for names in re.findall(r"from jaxalign\.training import \(?([\w, \n]+)", block):
      found |= {name.strip() for name in names.split(",") if name.strip()}
  public = _public_names_of_training_modules()
  return {name for name in found & set(public) if name not in jaxalign.config.__all__}


@pytest.mark.parametrize("name", sorted(set(NAMED) | _names_in_docs()))
def test_every_documented_name_imports_from_the_package(name):
  assert name in jaxalign.training.__all__
  assert getattr(jaxalign.training, name) is not None


def test_every_export_resolves():
  for name in jaxalign.training.__all__:
    getattr(jaxalign.training, name)
  with pytest.raises(AttributeError):
    jaxalign.training.no_such_name  # noqa: B018


@pytest.mark.parametrize("first", ["jaxalign.config", "jaxalign.training",
                                   "jaxalign.training.runs", "jaxalign.training.loop"])
def test_no_circular_import_in_any_order(first):
  code = (f"import {first}\nfrom jaxalign.training import *\n"
          "from jaxalign.training import run_training, PPOSpec, PreferenceObjective\n"
          "from jaxalign.config import RunConfig\nprint('ok')")
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
  assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


def test_a_wheel_ships_the_training_package():
  setuptools = pytest.importorskip("setuptools")
  assert "jaxalign.training" in setuptools.find_packages(ROOT, include=["jaxalign*"])
