#!/usr/bin/env bash
# Install jaxalign and jax[tpu] on every worker of a TPU VM / pod slice.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WORKER="${WORKER:-all}"
REPO_URL="${REPO_URL:-}"
REPO_REF="${REPO_REF:-HEAD}"
SOURCE_DIR="${SOURCE_DIR:-$TPU_SCRIPTS_REPO_ROOT}"
TARBALL="${TARBALL:-}"
PYTHON="${PYTHON:-python3.11}"
INSTALL_PYTHON="${INSTALL_PYTHON:-1}"
JAX_SPEC="${JAX_SPEC:-jax[tpu]}"
LIBTPU_FIND_LINKS="${LIBTPU_FIND_LINKS:-https://storage.googleapis.com/jax-releases/libtpu_releases.html}"
VERIFY="${VERIFY:-1}"
EXCLUDES="${EXCLUDES:-.git .venv .jax_cache .pytest_cache __pycache__ *.egg-info runs results tpu_logs tpu_results}"
PIP_PACKAGE_LIST=()
GCLOUD_FLAG_LIST=()

usage() {
  cat <<'EOF'
Usage: tpu_scripts/install.sh [options]

Puts the jaxalign repository on every worker (REMOTE_DIR, default ~/jaxalign),
creates a virtual environment there and runs
  pip install -e REMOTE_DIR "jax[tpu]" -f LIBTPU_FIND_LINKS
then (VERIFY=1) prints jax.device_count() from every worker.

Source of the code, one of:
  (default)          this checkout (SOURCE_DIR), packed with tar (EXCLUDES left
                     out) and copied with `gcloud compute tpus tpu-vm scp`
  REPO_URL           --repo-url=URL          git clone URL on every worker instead
  REPO_REF           --repo-ref=REF          branch, tag or commit to check out (HEAD)

Required: PROJECT (--project), ZONE (--zone), TPU_NAME (--tpu-name).
Optional:
  WORKER             --worker=all            workers to install on (all, 0, 0,1,...)
  REMOTE_DIR         --remote-dir=DIR        jaxalign (relative to the remote $HOME)
  REMOTE_VENV        --remote-venv=DIR       REMOTE_DIR/.venv
  PYTHON             --python=EXE            python3.11 (jaxalign needs >= 3.11)
  INSTALL_PYTHON=1   --install-python        apt-get install PYTHON (a python3.N name)
                                             on workers that lack it
  JAX_SPEC           --jax-spec=SPEC         jax[tpu]  (pin with e.g. "jax[tpu]==0.7.2")
  LIBTPU_FIND_LINKS  --libtpu-find-links=URL https://storage.googleapis.com/jax-releases/libtpu_releases.html
                     --pip-package=SPEC      extra package to install (repeatable)
  VERIFY=1           --verify / --no-verify  print the device count from each worker
  SOURCE_DIR         --source-dir=DIR        checkout to copy (the one holding this script)
  TARBALL            --tarball=PATH          local tar file to write (in $TMPDIR)
                     --gcloud-flag=FLAG      extra flag for ssh/scp, e.g. --internal-ip (repeatable)
  DRY_RUN=1          --dry-run               print the commands, run nothing

Examples:
  PROJECT=my-proj ZONE=us-central2-b TPU_NAME=align-v4 tpu_scripts/install.sh
  tpu_scripts/install.sh --project=my-proj --zone=us-east5-a --tpu-name=align-pod \
    --repo-url=https://github.com/me/jaxalign.git --repo-ref=v0.1.0
EOF
}

VALUE_FLAGS="project zone tpu-name worker repo-url repo-ref source-dir tarball remote-dir remote-venv python jax-spec libtpu-find-links"
BOOL_FLAGS="install-python verify"
LIST_FLAGS="pip-package gcloud-flag"
parse_args "$@"
((${#PASSTHROUGH[@]} == 0)) || die "install.sh takes no arguments after '--'"

require_tpu_target
require PYTHON JAX_SPEC REMOTE_DIR
gcloud_target_flags
resolve_remote_venv
extra=(${GCLOUD_FLAG_LIST[@]+"${GCLOUD_FLAG_LIST[@]}"})

remote_dir_q="$(sh_quote "$REMOTE_DIR")"
venv_q="$(sh_quote "$REMOTE_VENV")"
python_q="$(sh_quote "$PYTHON")"
script="set -euo pipefail"

if [[ -z "$REPO_URL" ]]; then
  # Copy this checkout: one tarball per worker is much faster than scp --recurse
  # of many small files, and leaves .venv/.git/caches behind.
  [[ -f "$SOURCE_DIR/pyproject.toml" ]] || die "SOURCE_DIR=$SOURCE_DIR has no pyproject.toml; set SOURCE_DIR or REPO_URL"
  if [[ -z "$TARBALL" ]]; then
    TARBALL="${TMPDIR:-/tmp}"
    TARBALL="${TARBALL%/}/jaxalign-src-$TPU_NAME.tar.gz"
  fi
  remote_tarball="jaxalign-src.tar.gz"
  tar_args=()
  read -r -a patterns <<<"$EXCLUDES" # read does not expand globs like *.egg-info
  for pattern in ${patterns[@]+"${patterns[@]}"}; do
    tar_args+=("--exclude=$pattern")
  done
  export COPYFILE_DISABLE=1 # macOS tar: no ._ resource-fork files
  run_cmd tar -czf "$TARBALL" -C "$SOURCE_DIR" ${tar_args[@]+"${tar_args[@]}"} .
  run_cmd gcloud compute tpus tpu-vm scp "$TARBALL" "$TPU_NAME:$remote_tarball" "${GCLOUD_TARGET[@]}" \
    "--worker=$WORKER" ${extra[@]+"${extra[@]}"}
  script+=$'\n'"mkdir -p $remote_dir_q"
  script+=$'\n'"tar -xzf $remote_tarball -C $remote_dir_q"
  script+=$'\n'"rm -f $remote_tarball"
else
  url_q="$(sh_quote "$REPO_URL")"
  ref_q="$(sh_quote "$REPO_REF")"
  script+=$'\n'"if [ -d $remote_dir_q/.git ]; then git -C $remote_dir_q remote set-url origin $url_q; else git clone $url_q $remote_dir_q; fi"
  script+=$'\n'"git -C $remote_dir_q fetch --quiet origin $ref_q"
  script+=$'\n'"git -C $remote_dir_q checkout --quiet --detach FETCH_HEAD"
fi

if is_true "$INSTALL_PYTHON" && [[ "$PYTHON" =~ ^python3\.[0-9]+$ ]]; then
  # Ubuntu 22.04 TPU images ship python3.10; the python3.11 packages are in its universe.
  script+=$'\n'"if ! command -v $python_q >/dev/null 2>&1; then sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $python_q $python_q-venv; fi"
fi
pip_args=(-e "$REMOTE_DIR" "$JAX_SPEC" ${PIP_PACKAGE_LIST[@]+"${PIP_PACKAGE_LIST[@]}"} -f "$LIBTPU_FIND_LINKS")
script+=$'\n'"[ -x $venv_q/bin/python ] || $python_q -m venv $venv_q"
script+=$'\n'"$venv_q/bin/python -m pip install --quiet --upgrade pip"
script+=$'\n'"$venv_q/bin/python -m pip install --quiet $(sh_quote "${pip_args[@]}")"
if is_true "$VERIFY"; then
  # Run on all workers at once: on a pod slice the TPU runtime waits for every host.
  verify_py='import jax; print(f"worker {jax.process_index()}/{jax.process_count()}: {jax.local_device_count()} local / {jax.device_count()} total {jax.devices()[0].device_kind} devices")'
  script+=$'\n'"$venv_q/bin/python -c $(sh_quote "$verify_py")"
fi

run_cmd gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_TARGET[@]}" "--worker=$WORKER" \
  ${extra[@]+"${extra[@]}"} "--command=$script"
