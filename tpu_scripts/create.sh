#!/usr/bin/env bash
# Create a Cloud TPU VM (single host, e.g. v4-8) or a pod slice (e.g. v5p-64),
# directly or through a queued resource.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

SPOT="${SPOT:-0}"
PREEMPTIBLE="${PREEMPTIBLE:-0}"
RESERVED="${RESERVED:-0}"
WAIT="${WAIT:-0}"
POLL_SECONDS="${POLL_SECONDS:-60}"

usage() {
  cat <<'EOF'
Usage: tpu_scripts/create.sh [options] [-- extra gcloud flags]

Creates TPU_NAME with `gcloud compute tpus tpu-vm create`, or with
`gcloud compute tpus queued-resources create` when --queued is given.

Required (environment variable or flag):
  PROJECT            --project=ID           Google Cloud project
  ZONE               --zone=ZONE            e.g. us-east5-a, us-central2-b
  TPU_NAME           --tpu-name=NAME        name of the TPU VM / slice
  ACCELERATOR_TYPE   --accelerator-type=T   v4-8, v5litepod-8, v5p-64, v6e-16, ...
Optional:
  RUNTIME_VERSION    --runtime-version=V    default from the accelerator:
                       v2/v3/v4 tpu-ubuntu2204-base, v5litepod v2-alpha-tpuv5-lite,
                       v5p v2-alpha-tpuv5, v6e v2-alpha-tpuv6e
  SPOT=1             --spot                 Spot capacity (cheaper, can be preempted)
  PREEMPTIBLE=1      --preemptible          legacy preemptible VM (not with --queued)
  RESERVED=1         --reserved             use reserved capacity
  QUEUED=1           --queued               request through a queued resource
  QUEUED_RESOURCE_ID --queued-resource-id=ID   default: TPU_NAME
  WAIT=1             --wait                 with --queued: poll until ACTIVE
  POLL_SECONDS       --poll-seconds=N       polling interval for --wait (60)
  DRY_RUN=1          --dry-run              print the commands, run nothing
Anything after `--` is appended to the gcloud create command, e.g.
  -- --network=my-net --labels=team=align --metadata=startup-script=...

Examples:
  PROJECT=my-proj ZONE=us-central2-b TPU_NAME=align-v4 ACCELERATOR_TYPE=v4-8 \
    tpu_scripts/create.sh
  tpu_scripts/create.sh --project=my-proj --zone=us-east5-a --tpu-name=align-pod \
    --accelerator-type=v5p-64 --queued --spot --wait
EOF
}

VALUE_FLAGS="project zone tpu-name accelerator-type runtime-version queued-resource-id poll-seconds"
BOOL_FLAGS="spot preemptible reserved queued wait"
parse_args "$@"

require_tpu_target
require ACCELERATOR_TYPE
if [[ -z "$RUNTIME_VERSION" ]]; then
  RUNTIME_VERSION="$(default_runtime_version "$ACCELERATOR_TYPE")"
  [[ -n "$RUNTIME_VERSION" ]] ||
    die "RUNTIME_VERSION is required for ACCELERATOR_TYPE=$ACCELERATOR_TYPE (no default known): set RUNTIME_VERSION=... or pass --runtime-version=..."
fi
if is_true "$SPOT" && is_true "$PREEMPTIBLE"; then
  die "choose one of SPOT=1 (--spot) and PREEMPTIBLE=1 (--preemptible)"
fi
if is_true "$QUEUED" && is_true "$PREEMPTIBLE"; then
  die "queued resources do not take --preemptible; use SPOT=1 (--spot) instead"
fi
if is_true "$WAIT" && ! is_true "$QUEUED"; then
  die "--wait only applies to --queued (tpu-vm create already waits until the TPU is ready)"
fi
[[ "$POLL_SECONDS" =~ ^[0-9]+$ ]] || die "POLL_SECONDS must be a whole number of seconds, got '$POLL_SECONDS'"
gcloud_target_flags

capacity=()
if is_true "$SPOT"; then capacity+=(--spot); fi
if is_true "$PREEMPTIBLE"; then capacity+=(--preemptible); fi
if is_true "$RESERVED"; then capacity+=(--reserved); fi

if ! is_true "$QUEUED"; then
  run_cmd gcloud compute tpus tpu-vm create "$TPU_NAME" "${GCLOUD_TARGET[@]}" \
    "--accelerator-type=$ACCELERATOR_TYPE" "--version=$RUNTIME_VERSION" \
    ${capacity[@]+"${capacity[@]}"} ${PASSTHROUGH[@]+"${PASSTHROUGH[@]}"}
  exit 0
fi

resolve_queued_resource_id
run_cmd gcloud compute tpus queued-resources create "$QUEUED_RESOURCE_ID" "${GCLOUD_TARGET[@]}" \
  "--node-id=$TPU_NAME" "--accelerator-type=$ACCELERATOR_TYPE" "--runtime-version=$RUNTIME_VERSION" \
  ${capacity[@]+"${capacity[@]}"} ${PASSTHROUGH[@]+"${PASSTHROUGH[@]}"}

describe=(gcloud compute tpus queued-resources describe "$QUEUED_RESOURCE_ID" "${GCLOUD_TARGET[@]}"
  "--format=value(state.state)")
if ! is_true "$WAIT"; then
  note "Queued resource $QUEUED_RESOURCE_ID requested; the TPU is usable once its state is ACTIVE:"
  note "  $(quote_words "${describe[@]}")"
  exit 0
fi

if is_dry_run; then
  printf '# then, every %ss until the state is ACTIVE:\n' "$POLL_SECONDS"
  run_cmd "${describe[@]}"
  exit 0
fi
while true; do
  state="$("${describe[@]}")"
  note "$(date '+%H:%M:%S') queued resource $QUEUED_RESOURCE_ID: ${state:-unknown}"
  case "$state" in
    ACTIVE) exit 0 ;;
    FAILED | SUSPENDED | SUSPENDING | DELETING)
      die "queued resource $QUEUED_RESOURCE_ID is $state; see: gcloud compute tpus queued-resources describe $QUEUED_RESOURCE_ID --project=$PROJECT --zone=$ZONE"
      ;;
  esac
  sleep "$POLL_SECONDS"
done
