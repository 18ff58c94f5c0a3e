#!/usr/bin/env bash
# Run the same command (e.g. `jaxalign train ...`) on every worker of a TPU VM
# or pod slice, streaming all workers' output back and into a local log file.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

WORKER="${WORKER:-all}"
RUN_NAME="${RUN_NAME:-}"
LOG_DIR="${LOG_DIR:-tpu_logs}"
RUN_DIR="${RUN_DIR:-}"
PASS_ENV="${PASS_ENV:-}"
PREFIX_WORKER="${PREFIX_WORKER:-1}"
REMOTE_LOG="${REMOTE_LOG:-1}"
ENV_LIST=()
GCLOUD_FLAG_LIST=()

usage() {
  cat <<'EOF'
Usage: tpu_scripts/run.sh [options] -- COMMAND [ARG...]

Runs COMMAND on every worker (--worker=all) over `gcloud compute tpus tpu-vm ssh`,
inside the virtual environment made by install.sh and from REMOTE_DIR. Output
from all workers streams back, each line prefixed with "[worker N]", and is
appended to LOG_DIR/RUN_NAME.log here (and, REMOTE_LOG=1, to
REMOTE_DIR/tpu_logs/RUN_NAME/worker-N.log on each worker).

Multi-host: leave JAXALIGN_COORDINATOR_ADDRESS / JAXALIGN_NUM_PROCESSES /
JAXALIGN_PROCESS_ID unset on Cloud TPU. jaxalign then calls
jax.distributed.initialize() with no arguments, which finds the coordinator,
the process count and this worker's index from the TPU metadata. Those three
are therefore not forwarded from this machine (pass --env to force them).

Required: PROJECT (--project), ZONE (--zone), TPU_NAME (--tpu-name), COMMAND.
Optional:
  RUN_DIR            --run-dir=DIR          exported as JAXALIGN_RUN_DIR on the workers;
                                            use a gs:// path so every host can write it
                     --env=KEY=VALUE        export KEY=VALUE on the workers (repeatable)
  PASS_ENV           --pass-env="A B"       forward these local variables by name
                                            (values show up in the ssh command line)
  (automatic)        every JAXALIGN_* variable exported here is forwarded
                                            (except the three multi-host ones)
  RUN_NAME           --run-name=NAME        TPU_NAME-YYYYmmdd-HHMMSS
  LOG_DIR            --log-dir=DIR          tpu_logs (local)
  WORKER             --worker=all           all, 0, 0,3, ...
  REMOTE_DIR         --remote-dir=DIR       jaxalign (as for install.sh)
  REMOTE_VENV        --remote-venv=DIR      REMOTE_DIR/.venv
  PREFIX_WORKER=1    --no-prefix-worker     do not prefix lines with [worker N]
  REMOTE_LOG=1       --no-remote-log        no per-worker log file on the workers
                     --gcloud-flag=FLAG     extra flag for ssh, e.g. --internal-ip
  DRY_RUN=1          --dry-run              print the commands, run nothing

Examples:
  tpu_scripts/run.sh -- python -c 'import jax; print(jax.device_count())'
  RUN_DIR=gs://my-bucket/runs/dpo-1 tpu_scripts/run.sh --run-name=dpo-1 \
    -- jaxalign train --config configs/dpo.yaml
EOF
}

VALUE_FLAGS="project zone tpu-name worker run-name log-dir run-dir pass-env remote-dir remote-venv"
BOOL_FLAGS="prefix-worker remote-log"
LIST_FLAGS="env gcloud-flag"
parse_args "$@"

require_tpu_target
((${#PASSTHROUGH[@]})) ||
  die "no command given: put it after '--', e.g. tpu_scripts/run.sh -- jaxalign train --config cfg.yaml"
if [[ -z "$RUN_NAME" ]]; then
  RUN_NAME="$TPU_NAME-$(date +%Y%m%d-%H%M%S)"
fi
[[ "$RUN_NAME" =~ ^[A-Za-z0-9._-]+$ ]] || die "RUN_NAME may only hold letters, digits, '.', '_' and '-', got '$RUN_NAME'"
gcloud_target_flags
resolve_remote_venv

# ---- environment for the workers (later entries win) ----
env_names=()
env_values=()
add_env() {
  [[ "$1" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "not a valid environment variable name: '$1'"
  env_names+=("$1")
  env_values+=("$2")
}
add_env PYTHONUNBUFFERED 1
skipped=()
while IFS= read -r name; do
  case "$name" in
    JAXALIGN_COORDINATOR_ADDRESS | JAXALIGN_NUM_PROCESSES | JAXALIGN_PROCESS_ID) skipped+=("$name") ;;
    JAXALIGN_*) add_env "$name" "${!name}" ;;
  esac
done < <(compgen -e | LC_ALL=C sort)
if ((${#skipped[@]})); then
  note "note: not forwarding ${skipped[*]}: on Cloud TPU jax.distributed.initialize() auto-detects (use --env to force)"
fi
read -r -a pass_names <<<"$PASS_ENV"
for name in ${pass_names[@]+"${pass_names[@]}"}; do
  [[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "PASS_ENV: not a valid variable name: '$name'"
  [[ -n "${!name+set}" ]] || die "PASS_ENV names $name, which is not set here"
  add_env "$name" "${!name}"
done
if [[ -n "$RUN_DIR" ]]; then
  add_env JAXALIGN_RUN_DIR "$RUN_DIR"
fi
for pair in ${ENV_LIST[@]+"${ENV_LIST[@]}"}; do
  [[ "$pair" == *=* ]] || die "--env takes KEY=VALUE, got '$pair'"
  add_env "${pair%%=*}" "${pair#*=}"
done

# ---- the script each worker runs ----
venv_q="$(sh_quote "$REMOTE_VENV")"
script="set -euo pipefail"
script+=$'\n'"[ -x $venv_q/bin/python ] || { echo \"no virtualenv $venv_q on \$(hostname): run tpu_scripts/install.sh first\" >&2; exit 1; }"
script+=$'\n'"VIRTUAL_ENV=\$(cd $venv_q && pwd)"
script+=$'\n'"export VIRTUAL_ENV PATH=\"\$VIRTUAL_ENV/bin:\$PATH\""
script+=$'\n'"cd $(sh_quote "$REMOTE_DIR")"
i=0
while ((i < ${#env_names[@]})); do
  script+=$'\n'"export ${env_names[i]}=$(sh_quote "${env_values[i]}")"
  i=$((i + 1))
done
script+=$'\n'"W=\$(curl -sf -H Metadata-Flavor:Google http://metadata.google.internal/computeMetadata/v1/instance/attributes/agent-worker-number || hostname)"
pipeline="$(sh_quote "${PASSTHROUGH[@]}") 2>&1"
if is_true "$REMOTE_LOG"; then
  script+=$'\n'"mkdir -p tpu_logs/$RUN_NAME"
  pipeline+=" | tee -a tpu_logs/$RUN_NAME/worker-\$W.log"
fi
if is_true "$PREFIX_WORKER"; then
  pipeline+=" | sed -u \"s/^/[worker \$W] /\""
fi
script+=$'\n'"$pipeline"

log_file="${LOG_DIR%/}/$RUN_NAME.log"
run_cmd mkdir -p "$LOG_DIR"
if ! is_dry_run; then
  note "run $RUN_NAME on $TPU_NAME (worker $WORKER); log: $log_file"
fi
run_logged "$log_file" gcloud compute tpus tpu-vm ssh "$TPU_NAME" "${GCLOUD_TARGET[@]}" "--worker=$WORKER" \
  ${GCLOUD_FLAG_LIST[@]+"${GCLOUD_FLAG_LIST[@]}"} "--command=$script"
