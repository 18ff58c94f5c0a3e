"""``initialize_distributed``: the JAXALIGN_* environment is all-or-nothing with errors that
name what is missing; gloo is switched on before ``jax.distributed.initialize``."""

import jax
import pytest

from jaxalign.parallel import distributed
from jaxalign.parallel.distributed import distributed_settings, initialize_distributed

ADDRESS, COUNT, INDEX = distributed._ENV
ALL_ENV = (ADDRESS, COUNT, INDEX, "JAXALIGN_CPU_COLLECTIVES", "TPU_WORKER_HOSTNAMES",
           "CLOUD_TPU_TASK_ID", "TPU_ACCELERATOR_TYPE")


@pytest.fixture
def env(monkeypatch):
  """No JAXALIGN_* / TPU variables and no TPU chips on the bus (hermetic on any host)."""
  from jax._src import hardware_utils
  for name in ALL_ENV:
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(hardware_utils, "num_available_tpu_chips_and_device_id", lambda: (0, None))
  return monkeypatch


@pytest.fixture
def calls(env):
  """Records jax.distributed.initialize and jax.config.update calls instead of making them;
  resets the module's once-only flag."""
  recorded = []
  env.setattr(distributed, "_initialized", False)
  env.setattr(jax.distributed, "initialize",
              lambda *args, **kwargs: recorded.append(("initialize", args, kwargs)))
  env.setattr(jax.config, "update", lambda *args: recorded.append(("config", args)))
  return recorded


def test_nothing_set_means_single_process(env):
  assert distributed_settings() is None


def test_all_three_from_the_environment(env):
  env.setenv(ADDRESS, "10.0.0.1:1234")
  env.setenv(COUNT, "4")
  env.setenv(INDEX, " 3 ")
  assert distributed_settings() == ("10.0.0.1:1234", 4, 3)


def test_arguments_win_over_the_environment(env):
  env.setenv(ADDRESS, "10.0.0.1:1234")
  env.setenv(COUNT, "4")
  env.setenv(INDEX, "3")
  assert distributed_settings("h:1", 2, 0) == ("h:1", 2, 0)


@pytest.mark.parametrize("given, missing", [
    ({ADDRESS: "h:1"}, (COUNT, INDEX)),
    ({ADDRESS: "h:1", COUNT: "2"}, (INDEX,)),
    ({COUNT: "2", INDEX: "1"}, (ADDRESS,)),
    ({INDEX: "0"}, (ADDRESS, COUNT)),
])
def test_partial_settings_name_what_is_missing(env, given, missing):
  for name, value in given.items():
    env.setenv(name, value)
  with pytest.raises(ValueError) as error:
    distributed_settings()
  message = str(error.value)
  assert all(name in message.split("but")[1] for name in missing), message
  assert all(name in message.split("but")[0] for name in given), message


@pytest.mark.parametrize("count, index, fragment", [
    ("two", "0", f"{COUNT} must be an integer, got 'two'"),
    ("2", "x", f"{INDEX} must be an integer"),
    ("2", "2", f"{INDEX}=2 is not in [0, {COUNT}=2)"),
    ("0", "0", f"{COUNT} must be >= 1"),
])
def test_bad_values_are_errors(env, count, index, fragment):
  env.setenv(ADDRESS, "h:1")
  env.setenv(COUNT, count)
  env.setenv(INDEX, index)
  with pytest.raises(ValueError) as error:
    distributed_settings()
  assert fragment in str(error.value)


def test_initialize_with_nothing_set_does_nothing(calls):
  assert initialize_distributed() is False
  assert calls == []
  assert distributed._initialized is False


def test_initialize_sets_gloo_before_joining(calls, env):
  env.setenv(ADDRESS, "127.0.0.1:9999")
  env.setenv(COUNT, "2")
  env.setenv(INDEX, "1")
  env.setenv("JAXALIGN_CPU_COLLECTIVES", "gloo")
  initialize_distributed()
  assert calls == [("config", ("jax_cpu_collectives_implementation", "gloo")),
                   ("initialize", ("127.0.0.1:9999",), {"num_processes": 2, "process_id": 1})]
  assert distributed._initialized is True


def test_initialize_partial_environment_fails_before_touching_jax(calls, env):
  env.setenv(ADDRESS, "127.0.0.1:9999")
  with pytest.raises(ValueError, match=COUNT):
    initialize_distributed()
  assert calls == []


def test_cloud_tpu_auto_detects(calls, env):
  env.setenv("TPU_ACCELERATOR_TYPE", "v4-8")
  initialize_distributed()
  assert calls == [("initialize", (), {})]


def test_tpu_vm_without_variables_is_detected_from_the_hardware(calls, env):
  from jax._src import hardware_utils
  env.setattr(hardware_utils, "num_available_tpu_chips_and_device_id", lambda: (4, 5))
  initialize_distributed()
  assert calls == [("initialize", (), {})]
