#!/usr/bin/env bash
# Multi-node GPU training under Slurm: one process per GPU, started with srun.
#
#   sbatch --nodes=4 tpu_scripts/slurm_gpu.sh -- jaxalign train --config cfg.yaml
#   (or, inside an salloc allocation: bash tpu_scripts/slurm_gpu.sh -- ...)
#
# The #SBATCH lines below are defaults; options given to sbatch override them.
#SBATCH --job-name=jaxalign
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --time=04:00:00
#SBATCH --output=slurm-%x-%j.out
set -euo pipefail

# sbatch runs a copy of this file from its spool folder, so look for common.sh
# next to the original too: TPU_SCRIPTS_DIR, or tpu_scripts/ under the folder
# sbatch was called from (SLURM_SUBMIT_DIR).
common=""
for dir in "$(dirname "${BASH_SOURCE[0]}")" "${TPU_SCRIPTS_DIR:-}" \
  "${SLURM_SUBMIT_DIR:-.}/tpu_scripts" "${SLURM_SUBMIT_DIR:-.}"; do
  if [[ -n "$dir" && -f "$dir/common.sh" ]]; then
    common="$dir/common.sh"
    break
  fi
done
if [[ -z "$common" ]]; then
  echo "error: cannot find tpu_scripts/common.sh: run sbatch from the repository root or set TPU_SCRIPTS_DIR" >&2
  exit 2
fi
# shellcheck source=common.sh
source "$common"

NODELIST="${NODELIST:-${SLURM_JOB_NODELIST:-${SLURM_NODELIST:-}}}"
NNODES="${NNODES:-${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-}}}"
GPUS_PER_NODE="${GPUS_PER_NODE:-}"
COORDINATOR_HOST="${COORDINATOR_HOST:-}"
COORDINATOR_PORT="${COORDINATOR_PORT:-}"
RUN_DIR="${RUN_DIR:-}"
PIN_GPU="${PIN_GPU:-1}"
LABEL="${LABEL:-1}"
ENV_LIST=()
SRUN_ARG_LIST=()

usage() {
  cat <<'EOF'
Usage: sbatch [sbatch options] tpu_scripts/slurm_gpu.sh [options] -- COMMAND [ARG...]
       bash tpu_scripts/slurm_gpu.sh [options] -- COMMAND [ARG...]   (inside salloc)

Starts COMMAND once per GPU on every node with srun and sets, for jaxalign's
jax.distributed.initialize():
  JAXALIGN_COORDINATOR_ADDRESS  first node of the job (scontrol show hostnames):PORT
  JAXALIGN_NUM_PROCESSES        nodes x GPUs per node
  JAXALIGN_PROCESS_ID           SLURM_PROCID of each task (set inside the task)
and gives each task one GPU: CUDA_VISIBLE_DEVICES = its SLURM_LOCALID-th visible GPU.
srun --label prefixes every output line with the task's rank.

Options (environment variable or flag; defaults from Slurm's variables):
  NNODES             --nnodes=N             SLURM_JOB_NUM_NODES
  GPUS_PER_NODE      --gpus-per-node=N      SLURM_GPUS_ON_NODE, else SLURM_NTASKS_PER_NODE,
                                            else SLURM_GPUS_PER_NODE
  NODELIST           --nodelist=LIST        SLURM_JOB_NODELIST (e.g. gpu[001-004])
  COORDINATOR_HOST   --coordinator-host=H   first host of NODELIST
  COORDINATOR_PORT   --coordinator-port=P   20000 + SLURM_JOB_ID % 20000 (12345 without a job)
  RUN_DIR            --run-dir=DIR          exported as JAXALIGN_RUN_DIR
                     --env=KEY=VALUE        exported for every task (repeatable)
                     --srun-arg=ARG         extra srun option, e.g. --cpus-per-task=12 (repeatable)
  PIN_GPU=1          --no-pin-gpu           leave CUDA_VISIBLE_DEVICES alone (when srun binds GPUs)
  LABEL=1            --no-label             no "rank: " prefix on output lines
  DRY_RUN=1          --dry-run              print the srun command, run nothing
                                            (scontrol is still asked for the host names)
EOF
}

VALUE_FLAGS="nnodes gpus-per-node nodelist coordinator-host coordinator-port run-dir"
BOOL_FLAGS="pin-gpu label"
LIST_FLAGS="env srun-arg"
parse_args "$@"
((${#PASSTHROUGH[@]})) ||
  die "no command given: put it after '--', e.g. sbatch tpu_scripts/slurm_gpu.sh -- jaxalign train --config cfg.yaml"

if [[ -z "$GPUS_PER_NODE" ]]; then
  if [[ -n "${SLURM_GPUS_ON_NODE:-}" ]]; then
    GPUS_PER_NODE="$SLURM_GPUS_ON_NODE"
  elif [[ -n "${SLURM_NTASKS_PER_NODE:-}" ]]; then
    GPUS_PER_NODE="$SLURM_NTASKS_PER_NODE"
  elif [[ -n "${SLURM_GPUS_PER_NODE:-}" ]]; then
    GPUS_PER_NODE="${SLURM_GPUS_PER_NODE##*:}" # "a100:8" -> 8
  fi
fi
require NNODES GPUS_PER_NODE
[[ "$NNODES" =~ ^[1-9][0-9]*$ ]] || die "NNODES must be a positive integer, got '$NNODES'"
[[ "$GPUS_PER_NODE" =~ ^[1-9][0-9]*$ ]] || die "GPUS_PER_NODE must be a positive integer, got '$GPUS_PER_NODE'"
NUM_PROCESSES=$((NNODES * GPUS_PER_NODE))

# first_host NODELIST: the first host of a Slurm host list such as gpu[003-004,9].
first_host() {
  if command -v scontrol >/dev/null 2>&1; then
    scontrol show hostnames "$1" | sed -n 1p
    return
  fi
  # No scontrol (e.g. a dry run on a laptop): expand the first entry by hand.
  local prefix rest first after suffix
  prefix="${1%%[[,]*}"
  rest="${1#"$prefix"}"
  if [[ "$rest" != "["* ]]; then
    printf '%s\n' "$prefix"
    return
  fi
  rest="${rest#[}"
  first="${rest%%[],-]*}"
  after="${rest#*]}"
  suffix="${after%%[[,]*}"
  [[ "${after#"$suffix"}" != "["* ]] ||
    die "cannot expand NODELIST=$1 without scontrol; set COORDINATOR_HOST"
  printf '%s\n' "$prefix$first$suffix"
}

if [[ -z "$COORDINATOR_HOST" ]]; then
  require NODELIST
  COORDINATOR_HOST="$(first_host "$NODELIST")"
  [[ -n "$COORDINATOR_HOST" ]] || die "no host found in NODELIST=$NODELIST; set COORDINATOR_HOST"
fi
if [[ -z "$COORDINATOR_PORT" ]]; then
  if [[ "${SLURM_JOB_ID:-}" =~ ^[0-9]+$ ]]; then
    # Differs between jobs, so two jobs sharing a first node do not collide.
    COORDINATOR_PORT=$((20000 + SLURM_JOB_ID % 20000))
  else
    COORDINATOR_PORT=12345
  fi
fi

envs=("JAXALIGN_COORDINATOR_ADDRESS=$COORDINATOR_HOST:$COORDINATOR_PORT" "JAXALIGN_NUM_PROCESSES=$NUM_PROCESSES")
if [[ -n "$RUN_DIR" ]]; then
  envs+=("JAXALIGN_RUN_DIR=$RUN_DIR")
fi
for pair in ${ENV_LIST[@]+"${ENV_LIST[@]}"}; do
  [[ "$pair" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || die "--env takes KEY=VALUE, got '$pair'"
  envs+=("$pair")
done

# What each task runs before COMMAND: its rank from SLURM_PROCID, and (PIN_GPU=1)
# the SLURM_LOCALID-th of the GPUs it can see.
# shellcheck disable=SC2016 # expanded by the task's bash, not here
task='export JAXALIGN_PROCESS_ID="$SLURM_PROCID"'
if is_true "$PIN_GPU"; then
  # shellcheck disable=SC2016
  task+='
if [ -z "${CUDA_VISIBLE_DEVICES:-}" ]; then export CUDA_VISIBLE_DEVICES="$SLURM_LOCALID"
elif [ "${CUDA_VISIBLE_DEVICES#*,}" != "$CUDA_VISIBLE_DEVICES" ]; then IFS=, read -r -a gpus <<< "$CUDA_VISIBLE_DEVICES"; export CUDA_VISIBLE_DEVICES="${gpus[$SLURM_LOCALID]}"; fi'
fi
task+='
exec "$@"'

srun_args=("--nodes=$NNODES" "--ntasks=$NUM_PROCESSES" "--ntasks-per-node=$GPUS_PER_NODE" --kill-on-bad-exit=1)
if is_true "$LABEL"; then srun_args+=(--label); fi

note "jaxalign: $NUM_PROCESSES processes ($NNODES nodes x $GPUS_PER_NODE GPUs), coordinator $COORDINATOR_HOST:$COORDINATOR_PORT"
run_cmd env "${envs[@]}" srun "${srun_args[@]}" ${SRUN_ARG_LIST[@]+"${SRUN_ARG_LIST[@]}"} \
  bash -c "$task" jaxalign-task "${PASSTHROUGH[@]}"
