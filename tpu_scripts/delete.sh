#!/usr/bin/env bash
# Delete a TPU VM / pod slice (and its queued resource), or only stop it.
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

YES="${YES:-0}"
STOP_ONLY="${STOP_ONLY:-0}"
ASYNC="${ASYNC:-0}"

usage() {
  cat <<'EOF'
Usage: tpu_scripts/delete.sh [options]

Deletes TPU_NAME (`gcloud compute tpus tpu-vm delete`). With QUEUED=1 (--queued)
deletes the queued resource instead, with --force so that the TPU it created
goes too. gcloud asks for confirmation unless YES=1 (--yes). Copy results first
(copy_results.sh): the workers' disks are deleted with the TPU.

Required: PROJECT (--project), ZONE (--zone), TPU_NAME (--tpu-name).
Optional:
  QUEUED=1           --queued               the TPU was made with create.sh --queued
  QUEUED_RESOURCE_ID --queued-resource-id=ID   default: TPU_NAME
  YES=1              --yes                  no confirmation prompt (gcloud --quiet)
  ASYNC=1            --async                return without waiting for the deletion
  STOP_ONLY=1        --stop-only            `tpu-vm stop` instead: keeps the VM and its
                                            disk (single-host TPUs only; start again
                                            with gcloud compute tpus tpu-vm start)
  DRY_RUN=1          --dry-run              print the commands, run nothing
EOF
}

VALUE_FLAGS="project zone tpu-name queued-resource-id"
BOOL_FLAGS="queued yes stop-only async"
parse_args "$@"
((${#PASSTHROUGH[@]} == 0)) || die "delete.sh takes no arguments after '--'"

require_tpu_target
gcloud_target_flags
opts=()
if is_true "$YES"; then opts+=(--quiet); fi
if is_true "$ASYNC"; then opts+=(--async); fi

if is_true "$STOP_ONLY"; then
  is_true "$QUEUED" && die "--stop-only does not apply to queued resources; delete them instead"
  run_cmd gcloud compute tpus tpu-vm stop "$TPU_NAME" "${GCLOUD_TARGET[@]}" ${opts[@]+"${opts[@]}"}
elif is_true "$QUEUED"; then
  resolve_queued_resource_id
  run_cmd gcloud compute tpus queued-resources delete "$QUEUED_RESOURCE_ID" "${GCLOUD_TARGET[@]}" \
    --force ${opts[@]+"${opts[@]}"}
else
  run_cmd gcloud compute tpus tpu-vm delete "$TPU_NAME" "${GCLOUD_TARGET[@]}" ${opts[@]+"${opts[@]}"}
fi
