"""Dry runs of tpu_scripts/*.sh print the exact commands and execute none of them.

Every script runs under bash with a fake `gcloud` (and gsutil, srun, tar, mkdir)
first on PATH; each fake records that it ran. Printed lines are "+ " and then the
words quoted with printf '%q', so each one is split back into argv with bash
itself, which also checks that the line can be pasted into a shell.
"""

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPTS = REPO / "tpu_scripts"
SCRIPT_NAMES = ["common.sh", "create.sh", "install.sh", "run.sh", "copy_results.sh",
                "delete.sh", "slurm_gpu.sh"]
POD = {"PROJECT": "my-proj", "ZONE": "us-east5-a", "ACCELERATOR_TYPE": "v5p-64",
       "TPU_NAME": "align-pod"}
TARGET = "--project=my-proj --zone=us-east5-a"
LIBTPU = "https://storage.googleapis.com/jax-releases/libtpu_releases.html"
FAKED = ["gcloud", "gsutil", "srun", "sbatch", "tar", "mkdir", "scontrol"]
BASH = shutil.which("bash")


@pytest.fixture
def sandbox(tmp_path):
  """A bin/ of fakes that record their argv under calls/, and a clean HOME/TMPDIR."""
  bin_dir, calls, home, tmp = (tmp_path / n for n in ("bin", "calls", "home", "tmp"))
  for d in (bin_dir, calls, home, tmp):
    d.mkdir()
  for name in FAKED:
    fake = bin_dir / name
    body = f'printf "%s\\0" "$@" > "{calls}/{name}.$$"\n'
    if name == "scontrol":  # answers `scontrol show hostnames LIST` like Slurm
      body += 'printf "%s\\n" gpu-node-007 gpu-node-008\n'
    fake.write_text(f"#!{BASH}\n" + body)
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
  return {"bin": bin_dir, "calls": calls, "home": home, "tmp": tmp, "root": tmp_path}


def run(sandbox, script, *args, env=None, dry=True, cwd=None, fake_scontrol=True):
  path = f"{sandbox['bin']}:/usr/bin:/bin"
  if not fake_scontrol:
    (sandbox["bin"] / "scontrol").unlink(missing_ok=True)
  full_env = {"PATH": path, "HOME": str(sandbox["home"]), "TMPDIR": str(sandbox["tmp"]),
              "LC_ALL": "C"}
  if dry:
    full_env["DRY_RUN"] = "1"
  full_env.update(env or {})
  return subprocess.run([BASH, str(SCRIPTS / script), *args], env=full_env, text=True,
                        capture_output=True, cwd=cwd or sandbox["root"], timeout=60)


def ok(result):
  assert result.returncode == 0, result.stderr
  return result


def lines(result):
  return [l for l in ok(result).stdout.splitlines() if l.startswith("+ ")]


def calls(sandbox):
  return sorted(p.name.split(".")[0] for p in sandbox["calls"].iterdir())


def recorded_argv(sandbox, name):
  (record,) = sandbox["calls"].glob(f"{name}.*")
  return record.read_text().split("\0")[:-1]


def argv(line):
  """The words of a printed "+ ..." line, split by bash (so the quoting is checked)."""
  assert line.startswith("+ ")
  out = subprocess.run([BASH, "-c", 'eval "words=($1)"; printf "%s\\0" "${words[@]}"', "_",
                        line[2:]], capture_output=True, text=True, check=True)
  return out.stdout.split("\0")[:-1]


def option(words, name):
  values = [w.split("=", 1)[1] for w in words if w.startswith(f"--{name}=")]
  assert len(values) == 1, (name, words)
  return values[0]


# ---------------------------------------------------------------------------- create


def test_create_v5p_pod_slice_prints_exact_command(sandbox):
  out = lines(run(sandbox, "create.sh", env=POD))
  assert out == [f"+ gcloud compute tpus tpu-vm create align-pod {TARGET} "
                 "--accelerator-type=v5p-64 --version=v2-alpha-tpuv5"]
  assert calls(sandbox) == []


@pytest.mark.parametrize("accel,version", [("v4-8", "tpu-ubuntu2204-base"),
                                           ("v5litepod-8", "v2-alpha-tpuv5-lite"),
                                           ("v6e-16", "v2-alpha-tpuv6e")])
def test_create_single_host_runtime_defaults(sandbox, accel, version):
  env = dict(POD, ACCELERATOR_TYPE=accel, TPU_NAME="align-v4", ZONE="us-central2-b")
  out = lines(run(sandbox, "create.sh", env=env))
  assert out == ["+ gcloud compute tpus tpu-vm create align-v4 --project=my-proj "
                 f"--zone=us-central2-b --accelerator-type={accel} --version={version}"]


def test_create_flags_override_environment_and_extra_args_pass_through(sandbox):
  env = dict(POD, RUNTIME_VERSION="from-env")
  out = lines(run(sandbox, "create.sh", "--zone", "europe-west4-b", "--runtime-version=v2-alpha",
                  "--spot", "--", "--labels=team=align", "--description=my slice", env=env))
  assert out == ["+ gcloud compute tpus tpu-vm create align-pod --project=my-proj "
                 "--zone=europe-west4-b --accelerator-type=v5p-64 --version=v2-alpha --spot "
                 "--labels=team=align --description=my\\ slice"]
  assert argv(out[0])[-1] == "--description=my slice"


def test_create_dry_run_flag_equals_environment_variable(sandbox):
  by_flag = run(sandbox, "create.sh", "--dry-run", "--preemptible", env=POD, dry=False)
  by_env = run(sandbox, "create.sh", "--preemptible", env=POD)
  assert lines(by_flag) == lines(by_env)
  assert lines(by_env)[0].endswith(" --version=v2-alpha-tpuv5 --preemptible")
  assert calls(sandbox) == []


def test_create_queued_resource_with_spot_and_wait(sandbox):
  out = lines(run(sandbox, "create.sh", "--queued", "--spot", "--wait", env=POD))
  assert out == [
      f"+ gcloud compute tpus queued-resources create align-pod {TARGET} --node-id=align-pod "
      "--accelerator-type=v5p-64 --runtime-version=v2-alpha-tpuv5 --spot",
      f"+ gcloud compute tpus queued-resources describe align-pod {TARGET} "
      "--format=value\\(state.state\\)",
  ]
  assert calls(sandbox) == []


def test_create_queued_resource_id_can_differ_from_node(sandbox):
  env = dict(POD, QUEUED="1", QUEUED_RESOURCE_ID="align-qr", RESERVED="1")
  out = lines(run(sandbox, "create.sh", env=env))
  assert out == [f"+ gcloud compute tpus queued-resources create align-qr {TARGET} "
                 "--node-id=align-pod --accelerator-type=v5p-64 "
                 "--runtime-version=v2-alpha-tpuv5 --reserved"]


@pytest.mark.parametrize("args,message", [
    (["--queued", "--preemptible"], "use SPOT=1"),
    (["--spot", "--preemptible"], "choose one of"),
    (["--wait"], "--wait only applies to --queued"),
    (["--bogus"], "unknown option --bogus"),
    (["stray"], "unexpected argument 'stray'"),
])
def test_create_rejects_bad_combinations(sandbox, args, message):
  result = run(sandbox, "create.sh", *args, env=POD)
  assert result.returncode != 0 and message in result.stderr
  assert calls(sandbox) == []


def test_create_unknown_accelerator_needs_runtime_version(sandbox):
  result = run(sandbox, "create.sh", env=dict(POD, ACCELERATOR_TYPE="v9-8"))
  assert result.returncode != 0 and "RUNTIME_VERSION is required" in result.stderr
  out = lines(run(sandbox, "create.sh", "--runtime-version=custom", env=dict(POD, ACCELERATOR_TYPE="v9-8")))
  assert out[0].endswith("--accelerator-type=v9-8 --version=custom")


# ---------------------------------------------------------------------------- install


def test_install_copies_checkout_to_all_workers(sandbox):
  out = lines(run(sandbox, "install.sh", env=POD))
  tarball = f"{sandbox['tmp']}/jaxalign-src-align-pod.tar.gz"
  assert len(out) == 3
  tar = argv(out[0])
  assert tar[:5] == ["tar", "-czf", tarball, "-C", str(REPO)] and tar[-1] == "."
  assert {"--exclude=.git", "--exclude=.venv", "--exclude=*.egg-info"} <= set(tar)
  assert out[1] == (f"+ gcloud compute tpus tpu-vm scp {tarball} align-pod:jaxalign-src.tar.gz "
                    f"{TARGET} --worker=all")
  ssh = argv(out[2])
  assert ssh[:8] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "align-pod",
                     "--project=my-proj", "--zone=us-east5-a"]
  assert ssh[8] == "--worker=all" and len(ssh) == 10
  script = option(ssh, "command").splitlines()
  assert script[:4] == ["set -euo pipefail", "mkdir -p jaxalign",
                        "tar -xzf jaxalign-src.tar.gz -C jaxalign", "rm -f jaxalign-src.tar.gz"]
  assert "[ -x jaxalign/.venv/bin/python ] || python3.11 -m venv jaxalign/.venv" in script
  assert ("jaxalign/.venv/bin/python -m pip install --quiet -e jaxalign 'jax[tpu]' "
          f"-f {LIBTPU}") in script
  assert any("apt-get install -y -qq python3.11 python3.11-venv" in l for l in script)
  assert script[-1].startswith("jaxalign/.venv/bin/python -c 'import jax;")
  subprocess.run([BASH, "-n", "-c", "\n".join(script)], check=True)
  assert calls(sandbox) == []


def test_install_git_clone_mode_and_options(sandbox):
  out = lines(run(sandbox, "install.sh", "--repo-url=https://github.com/me/jaxalign.git",
                  "--repo-ref=v0.1.0", "--jax-spec=jax[tpu]==0.7.2", "--pip-package=wandb",
                  "--no-verify", "--no-install-python", "--gcloud-flag=--internal-ip",
                  "--libtpu-find-links=https://example.com/libtpu.html", env=POD))
  assert len(out) == 1
  ssh = argv(out[0])
  assert "--worker=all" in ssh and "--internal-ip" in ssh
  script = option(ssh, "command").splitlines()
  assert script == [
      "set -euo pipefail",
      "if [ -d jaxalign/.git ]; then git -C jaxalign remote set-url origin "
      "https://github.com/me/jaxalign.git; else git clone https://github.com/me/jaxalign.git "
      "jaxalign; fi",
      "git -C jaxalign fetch --quiet origin v0.1.0",
      "git -C jaxalign checkout --quiet --detach FETCH_HEAD",
      "[ -x jaxalign/.venv/bin/python ] || python3.11 -m venv jaxalign/.venv",
      "jaxalign/.venv/bin/python -m pip install --quiet --upgrade pip",
      "jaxalign/.venv/bin/python -m pip install --quiet -e jaxalign 'jax[tpu]==0.7.2' wandb "
      "-f https://example.com/libtpu.html",
  ]
  subprocess.run([BASH, "-n", "-c", "\n".join(script)], check=True)


# ---------------------------------------------------------------------------- run


def _split_logged(line):
  match = re.fullmatch(r"(.*) 2>&1 \| tee -a (\S+)", line)
  assert match, line
  return argv(match.group(1)), argv("+ " + match.group(2))[0]


def test_run_same_command_on_all_workers_with_local_log(sandbox):
  env = dict(POD, JAXALIGN_SEED="7", JAXALIGN_PROCESS_ID="3", HF_TOKEN="secret",
             RUN_DIR="gs://my-bucket/runs/dpo-1")
  result = run(sandbox, "run.sh", "--run-name=dpo-1", "--env", "XLA_FLAGS=--xla_foo=1 --bar",
               "--", "jaxalign", "train", "--config", "configs/my dpo.yaml", env=env)
  out = lines(result)
  assert out[0] == "+ mkdir -p tpu_logs"
  assert out[1].startswith(f"+ gcloud compute tpus tpu-vm ssh align-pod {TARGET} --worker=all "
                           "$'--command=set -euo pipefail\\n")
  ssh, log = _split_logged(out[1])
  assert log == "tpu_logs/dpo-1.log"
  assert ssh[:9] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "align-pod",
                     "--project=my-proj", "--zone=us-east5-a", "--worker=all"]
  script = option(ssh, "command").splitlines()
  assert "cd jaxalign" in script
  assert "export JAXALIGN_SEED=7" in script
  assert "export JAXALIGN_RUN_DIR=gs://my-bucket/runs/dpo-1" in script
  assert "export XLA_FLAGS='--xla_foo=1 --bar'" in script
  # Cloud TPU: left to jax.distributed.initialize() auto-detection, not forwarded.
  assert not any("JAXALIGN_PROCESS_ID" in l for l in script)
  assert "JAXALIGN_PROCESS_ID" in result.stderr
  assert not any("HF_TOKEN" in l for l in script)  # only with PASS_ENV
  assert script[-1] == ("jaxalign train --config 'configs/my dpo.yaml' 2>&1 | tee -a "
                        'tpu_logs/dpo-1/worker-$W.log | sed -u "s/^/[worker $W] /"')
  assert calls(sandbox) == []
  assert not (sandbox["root"] / "tpu_logs").exists()


def test_run_remote_script_runs_on_a_fake_worker(sandbox, tmp_path):
  """Execute the --command script the way a worker would: venv, env, prefix, log."""
  out = lines(run(sandbox, "run.sh", "--run-name=r1", "--run-dir=gs://b/r1",
                  "--pass-env=MY_VAR", "--", "sh", "-c", 'echo "hi $JAXALIGN_RUN_DIR $MY_VAR"; pwd',
                  env=dict(POD, MY_VAR="it's")))
  ssh, _ = _split_logged(out[1])
  worker_home, worker_bin = tmp_path / "worker", tmp_path / "worker_bin"
  venv_bin = worker_home / "jaxalign" / ".venv" / "bin"
  venv_bin.mkdir(parents=True)
  worker_bin.mkdir()
  # The metadata server's agent-worker-number, answered by a fake curl.
  for exe, body in ((venv_bin / "python", "exit 0"), (worker_bin / "curl", "echo 5")):
    exe.write_text(f"#!/bin/sh\n{body}\n")
    exe.chmod(0o755)
  done = subprocess.run([BASH, "-c", option(ssh, "command")], cwd=worker_home, text=True,
                        capture_output=True, env={"PATH": f"{worker_bin}:/usr/bin:/bin",
                                                  "HOME": str(worker_home)})
  assert done.returncode == 0, done.stderr
  assert done.stdout.splitlines() == ["[worker 5] hi gs://b/r1 it's",
                                      f"[worker 5] {worker_home / 'jaxalign'}"]
  assert (worker_home / "jaxalign/tpu_logs/r1/worker-5.log").read_text().startswith("hi gs://b/r1")


def test_run_without_venv_fails_clearly_on_the_worker(sandbox, tmp_path):
  ssh, _ = _split_logged(lines(run(sandbox, "run.sh", "--run-name=r", "--", "true", env=POD))[1])
  done = subprocess.run([BASH, "-c", option(ssh, "command")], cwd=tmp_path, text=True,
                        capture_output=True)
  assert done.returncode != 0 and "run tpu_scripts/install.sh first" in done.stderr


def test_run_needs_a_command_and_a_safe_run_name(sandbox):
  result = run(sandbox, "run.sh", env=POD)
  assert result.returncode != 0 and "no command given" in result.stderr
  result = run(sandbox, "run.sh", "--run-name=a/b", "--", "true", env=POD)
  assert result.returncode != 0 and "RUN_NAME" in result.stderr


def test_run_executes_what_the_dry_run_prints(sandbox):
  """Without DRY_RUN the same argv reaches gcloud, and its output lands in the log."""
  args = ["--run-name=real", "--no-remote-log", "--", "jaxalign", "train"]
  printed, _ = _split_logged(lines(run(sandbox, "run.sh", *args, env=POD))[1])
  (sandbox["bin"] / "mkdir").unlink()  # let the log folder really be made
  result = ok(run(sandbox, "run.sh", *args, env=POD, dry=False))
  assert recorded_argv(sandbox, "gcloud") == printed[1:]
  assert (sandbox["root"] / "tpu_logs" / "real.log").exists()
  assert result.stderr.startswith("+ mkdir -p tpu_logs")


# ---------------------------------------------------------------------------- copy / delete


def test_copy_results_from_bucket_and_from_worker_0(sandbox):
  out = lines(run(sandbox, "copy_results.sh", "--results=gs://my-bucket/runs/dpo-1/"))
  assert out == ["+ mkdir -p tpu_results/dpo-1",
                 "+ gsutil -m rsync -r gs://my-bucket/runs/dpo-1 tpu_results/dpo-1"]
  out = lines(run(sandbox, "copy_results.sh", "--results=gs://b/x", "--gcloud-storage",
                  "--local-dir=out"))
  assert out[-1] == "+ gcloud storage rsync --recursive gs://b/x out/x"
  out = lines(run(sandbox, "copy_results.sh", "--results=jaxalign/runs/dpo-1", env=POD))
  assert out == ["+ mkdir -p tpu_results",
                 "+ gcloud compute tpus tpu-vm scp --recurse align-pod:jaxalign/runs/dpo-1 "
                 f"tpu_results {TARGET} --worker=0"]
  assert calls(sandbox) == []


def test_delete_tpu_vm_and_queued_resource(sandbox):
  assert lines(run(sandbox, "delete.sh", env=POD)) == [
      f"+ gcloud compute tpus tpu-vm delete align-pod {TARGET}"]
  assert lines(run(sandbox, "delete.sh", "--queued", "--yes", env=POD)) == [
      f"+ gcloud compute tpus queued-resources delete align-pod {TARGET} --force --quiet"]
  assert lines(run(sandbox, "delete.sh", "--stop-only", "--async", env=POD)) == [
      f"+ gcloud compute tpus tpu-vm stop align-pod {TARGET} --async"]
  assert calls(sandbox) == []


# ---------------------------------------------------------------------------- errors


@pytest.mark.parametrize("script,args,missing", [
    ("create.sh", [], "PROJECT"),
    ("create.sh", [], "ZONE"),
    ("create.sh", [], "TPU_NAME"),
    ("create.sh", [], "ACCELERATOR_TYPE"),
    ("install.sh", [], "TPU_NAME"),
    ("run.sh", ["--", "true"], "ZONE"),
    ("copy_results.sh", [], "RESULTS"),
    ("copy_results.sh", ["--results=runs/x"], "PROJECT"),
    ("delete.sh", [], "PROJECT"),
])
def test_missing_required_variable_is_named(sandbox, script, args, missing):
  env = {k: v for k, v in POD.items() if k != missing}
  result = run(sandbox, script, *args, env=env)
  assert result.returncode != 0
  flag = "--" + missing.lower().replace("_", "-")
  assert f"error: {missing} is required" in result.stderr and flag in result.stderr
  assert result.stdout == "" and calls(sandbox) == []


def test_help_works_without_any_variable(sandbox):
  for script in SCRIPT_NAMES[1:]:
    result = ok(run(sandbox, script, "--help"))
    assert result.stdout.startswith("Usage:")


# ---------------------------------------------------------------------------- slurm

SLURM = {"SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "gpu-node-[007-008]",
         "SLURM_JOB_NUM_NODES": "2", "SLURM_GPUS_ON_NODE": "8"}


def _slurm_line(result):
  out = lines(result)
  assert len(out) == 1
  return out[0], argv(out[0])


def test_slurm_dry_run_derives_coordinator_and_world_size(sandbox):
  line, words = _slurm_line(run(sandbox, "slurm_gpu.sh", "--", "jaxalign", "train", "--config",
                                "c.yaml", env=SLURM))
  assert line.startswith("+ env JAXALIGN_COORDINATOR_ADDRESS=gpu-node-007:24242 "
                         "JAXALIGN_NUM_PROCESSES=16 srun --nodes=2 --ntasks=16 "
                         "--ntasks-per-node=8 --kill-on-bad-exit=1 --label bash -c ")
  assert line.endswith(" jaxalign-task jaxalign train --config c.yaml")
  assert words[-5:] == ["jaxalign-task", "jaxalign", "train", "--config", "c.yaml"]
  # scontrol (a read-only query) was asked for the host names; srun never ran.
  assert calls(sandbox) == ["scontrol"]
  assert recorded_argv(sandbox, "scontrol") == ["show", "hostnames", "gpu-node-[007-008]"]


@pytest.mark.parametrize("nodelist,host", [("gpu[003-004,9]", "gpu003"), ("a1,a2", "a1"),
                                           ("rack-[10,12]-n,b7", "rack-10-n"), ("solo", "solo")])
def test_slurm_first_host_without_scontrol(sandbox, nodelist, host):
  env = dict(SLURM, SLURM_JOB_NODELIST=nodelist, SLURM_JOB_ID="7", SLURM_GPUS_ON_NODE="",
             SLURM_NTASKS_PER_NODE="4")
  line, _ = _slurm_line(run(sandbox, "slurm_gpu.sh", "--", "true", env=env, fake_scontrol=False))
  assert line.startswith(f"+ env JAXALIGN_COORDINATOR_ADDRESS={host}:20007 "
                         "JAXALIGN_NUM_PROCESSES=8 srun --nodes=2 --ntasks=8 --ntasks-per-node=4 ")


@pytest.mark.parametrize("procid,localid,visible,gpu", [
    ("11", "3", "0,1,2,3,4,5,6,7", "3"),  # every task sees the node's GPUs: take one
    ("4", "4", None, "4"),                # nothing set: the local rank
    ("9", "1", "6", "6"),                 # srun already bound one GPU: keep it
])
def test_slurm_task_gets_rank_and_one_gpu(sandbox, procid, localid, visible, gpu):
  _, words = _slurm_line(run(sandbox, "slurm_gpu.sh", "--run-dir=/shared/runs/a", "--env=FOO=b r",
                             "--", "jaxalign", "train", env=SLURM))
  env_end = words.index("srun")
  assert words[1:env_end] == ["JAXALIGN_COORDINATOR_ADDRESS=gpu-node-007:24242",
                              "JAXALIGN_NUM_PROCESSES=16", "JAXALIGN_RUN_DIR=/shared/runs/a",
                              "FOO=b r"]
  bash_at = words.index("bash")
  assert words[bash_at + 1] == "-c"
  task_env = {"PATH": "/usr/bin:/bin", "SLURM_PROCID": procid, "SLURM_LOCALID": localid}
  if visible is not None:
    task_env["CUDA_VISIBLE_DEVICES"] = visible
  shown = subprocess.run([BASH, "-c", words[bash_at + 2], "jaxalign-task", "sh", "-c",
                          'echo "$JAXALIGN_PROCESS_ID $CUDA_VISIBLE_DEVICES"'],
                         env=task_env, capture_output=True, text=True, check=True)
  assert shown.stdout.split() == [procid, gpu]


def test_slurm_explicit_settings_and_missing_ones(sandbox):
  line, _ = _slurm_line(run(sandbox, "slurm_gpu.sh", "--nnodes=4", "--gpus-per-node=2",
                            "--coordinator-host=head", "--coordinator-port=9999", "--no-label",
                            "--no-pin-gpu", "--srun-arg=--cpus-per-task=12", "--", "true"))
  assert line.startswith("+ env JAXALIGN_COORDINATOR_ADDRESS=head:9999 JAXALIGN_NUM_PROCESSES=8 "
                         "srun --nodes=4 --ntasks=8 --ntasks-per-node=2 --kill-on-bad-exit=1 "
                         "--cpus-per-task=12 bash -c ")
  assert "CUDA_VISIBLE_DEVICES" not in line
  result = run(sandbox, "slurm_gpu.sh", "--", "true", env={"SLURM_JOB_NUM_NODES": "2"})
  assert result.returncode != 0 and "GPUS_PER_NODE is required" in result.stderr
  result = run(sandbox, "slurm_gpu.sh", "--gpus-per-node=8", "--", "true",
               env={"SLURM_JOB_NUM_NODES": "2"})
  assert result.returncode != 0 and "NODELIST is required" in result.stderr
  result = run(sandbox, "slurm_gpu.sh", env=SLURM)
  assert result.returncode != 0 and "no command given" in result.stderr
  assert "srun" not in calls(sandbox)


def test_slurm_runs_from_sbatch_spool_copy(sandbox, tmp_path):
  """sbatch runs a copy of the script elsewhere: common.sh is found via SLURM_SUBMIT_DIR."""
  spool = tmp_path / "spool"
  spool.mkdir()
  shutil.copy(SCRIPTS / "slurm_gpu.sh", spool / "slurm_script")
  env = {"PATH": f"{sandbox['bin']}:/usr/bin:/bin", "DRY_RUN": "1", "SLURM_SUBMIT_DIR": str(REPO),
         **SLURM}
  result = subprocess.run([BASH, str(spool / "slurm_script"), "--", "true"], env=env,
                          capture_output=True, text=True, cwd=tmp_path)
  assert result.returncode == 0, result.stderr
  assert result.stdout.startswith("+ env JAXALIGN_COORDINATOR_ADDRESS=gpu-node-007:24242 ")
  env["SLURM_SUBMIT_DIR"] = str(tmp_path)
  result = subprocess.run([BASH, str(spool / "slurm_script"), "--", "true"], env=env,
                          capture_output=True, text=True, cwd=tmp_path)
  assert result.returncode != 0 and "cannot find tpu_scripts/common.sh" in result.stderr


# ---------------------------------------------------------------------------- helpers, lint


def test_sh_quote_round_trips_through_a_shell():
  words = ["plain", "two words", "it's", "jax[tpu]", "", "$HOME", "a\nb\n", "--x=1 2", "back\\slash"]
  script = f'source {SCRIPTS / "common.sh"}; eval "set -- $(sh_quote "$@")"; printf "%s\\0" "$@"'
  out = subprocess.run([BASH, "-c", script, "_", *words], capture_output=True, text=True,
                       check=True, env={"PATH": "/usr/bin:/bin"})
  assert out.stdout.split("\0")[:-1] == words


def test_scripts_are_executable_bash():
  for name in SCRIPT_NAMES:
    path = SCRIPTS / name
    assert path.read_text().startswith("#!/usr/bin/env bash\n"), name
    assert "set -euo pipefail" in path.read_text(), name
    assert os.access(path, os.X_OK), name


def test_shellcheck_clean():
  shellcheck = shutil.which("shellcheck")
  if shellcheck is None:
    pytest.skip("shellcheck is not installed")
  result = subprocess.run([shellcheck, "-x", *(str(SCRIPTS / n) for n in SCRIPT_NAMES)],
                          capture_output=True, text=True, cwd=SCRIPTS)
  assert result.returncode == 0 and result.stdout == "", result.stdout
