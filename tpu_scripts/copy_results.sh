#!/usr/bin/env bash
# Copy a run's results back: from a gs:// bucket (gsutil -m rsync), or from a
# worker's disk (gcloud compute tpus tpu-vm scp --recurse, worker 0).
set -euo pipefail
# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

RESULTS="${RESULTS:-}"
LOCAL_DIR="${LOCAL_DIR:-tpu_results}"
WORKER="${WORKER:-0}"
GCLOUD_STORAGE="${GCLOUD_STORAGE:-0}"
GCLOUD_FLAG_LIST=()

usage() {
  cat <<'EOF'
Usage: tpu_scripts/copy_results.sh --results=PATH [options]

Copies PATH to LOCAL_DIR/<last part of PATH>:
  gs://bucket/runs/x   gsutil -m rsync -r gs://bucket/runs/x LOCAL_DIR/x
                       (needs no TPU: works after delete.sh too)
  jaxalign/runs/x      gcloud compute tpus tpu-vm scp --recurse TPU_NAME:jaxalign/runs/x LOCAL_DIR
                       from worker WORKER (0), relative to the remote $HOME;
                       needs PROJECT, ZONE and TPU_NAME

Options (environment variable or flag):
  RESULTS            --results=PATH         required; gs:// URL or path on the worker
  LOCAL_DIR          --local-dir=DIR        tpu_results
  WORKER             --worker=N             0 (on a pod, process 0 usually writes results)
  GCLOUD_STORAGE=1   --gcloud-storage       use `gcloud storage rsync --recursive` instead of gsutil
  PROJECT, ZONE, TPU_NAME (--project, --zone, --tpu-name) for copies from a worker
                     --gcloud-flag=FLAG     extra flag for scp, e.g. --internal-ip
  DRY_RUN=1          --dry-run              print the commands, run nothing

Examples:
  tpu_scripts/copy_results.sh --results=gs://my-bucket/runs/dpo-1
  tpu_scripts/copy_results.sh --results=jaxalign/tpu_logs/dpo-1   # worker 0's run.sh log
  tpu_scripts/copy_results.sh --results=jaxalign/tpu_logs/dpo-1 --worker=3 --local-dir=logs/w3
EOF
}

VALUE_FLAGS="project zone tpu-name results local-dir worker"
BOOL_FLAGS="gcloud-storage"
LIST_FLAGS="gcloud-flag"
parse_args "$@"
((${#PASSTHROUGH[@]} == 0)) || die "copy_results.sh takes no arguments after '--'"

require RESULTS LOCAL_DIR
source_path="${RESULTS%/}"
[[ -n "$source_path" ]] || die "RESULTS must name a folder, got '$RESULTS'"
name="${source_path##*/}"

if [[ "$source_path" == gs://* ]]; then
  [[ "$source_path" == gs://*/* ]] || die "RESULTS=$RESULTS names a whole bucket; give a folder inside it"
  dest="${LOCAL_DIR%/}/$name"
  run_cmd mkdir -p "$dest"
  if is_true "$GCLOUD_STORAGE"; then
    run_cmd gcloud storage rsync --recursive "$source_path" "$dest"
  else
    run_cmd gsutil -m rsync -r "$source_path" "$dest"
  fi
else
  require_tpu_target
  gcloud_target_flags
  run_cmd mkdir -p "$LOCAL_DIR"
  run_cmd gcloud compute tpus tpu-vm scp --recurse "$TPU_NAME:$source_path" "$LOCAL_DIR" \
    "${GCLOUD_TARGET[@]}" "--worker=$WORKER" ${GCLOUD_FLAG_LIST[@]+"${GCLOUD_FLAG_LIST[@]}"}
fi
