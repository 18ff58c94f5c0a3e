#!/usr/bin/env bash
# Variables set here (GCLOUD_TARGET, PASSTHROUGH, ...) are read by the scripts
# that source this file:
# shellcheck disable=SC2034
#
# Shared helpers for the tpu_scripts/*.sh launchers. Sourced, not executed.
#
# Every setting is an environment variable with an equivalent flag:
#   PROJECT=my-proj   <=>  --project=my-proj   (or --project my-proj)
#   TPU_NAME=pod      <=>  --tpu-name=pod
#   DRY_RUN=1         <=>  --dry-run           (booleans: --spot, --no-spot, ...)
# Flags win over the environment. Everything after a lone `--` is passed
# through (extra gcloud flags for create.sh, the remote command for run.sh).
#
# Written for bash >= 3.2 (the macOS /bin/bash) as well as bash 5: no
# namerefs, no associative arrays, no ${x,,}; empty arrays are expanded as
# ${a[@]+"${a[@]}"} so `set -u` does not trip on bash < 4.4.

set -euo pipefail

TPU_SCRIPTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# The repository root (the folder holding pyproject.toml).
TPU_SCRIPTS_REPO_ROOT="$(cd "$TPU_SCRIPTS_DIR/.." && pwd)"

# ---------------------------------------------------------------------------
# Defaults (override with environment variables or flags).
# ---------------------------------------------------------------------------
PROJECT="${PROJECT:-}"
ZONE="${ZONE:-}"
TPU_NAME="${TPU_NAME:-}"
ACCELERATOR_TYPE="${ACCELERATOR_TYPE:-}"
RUNTIME_VERSION="${RUNTIME_VERSION:-}"
DRY_RUN="${DRY_RUN:-0}"
# Queued resources (`gcloud compute tpus queued-resources`): QUEUED=1.
QUEUED="${QUEUED:-0}"
QUEUED_RESOURCE_ID="${QUEUED_RESOURCE_ID:-}"
# Where the repository lives on every worker, relative to the remote $HOME
# (ssh starts there) unless absolute; its virtual environment.
REMOTE_DIR="${REMOTE_DIR:-jaxalign}"
REMOTE_VENV="${REMOTE_VENV:-}"

# Filled by parse_args: everything after `--`.
PASSTHROUGH=()

# ---------------------------------------------------------------------------
# Output helpers.
# ---------------------------------------------------------------------------
die() {
  printf 'error: %s\n' "$*" >&2
  exit 2
}

note() {
  printf '%s\n' "$*" >&2
}

is_true() {
  case "${1:-}" in
    1 | true | TRUE | True | yes | YES | on | ON) return 0 ;;
    *) return 1 ;;
  esac
}

is_dry_run() {
  is_true "$DRY_RUN"
}

# quote_words WORD...: the words shell-quoted with printf '%q', space-joined.
quote_words() {
  local out="" word
  for word in "$@"; do
    out+="${out:+ }$(printf '%q' "$word")"
  done
  printf '%s' "$out"
}

# sh_quote WORD...: the words quoted for a POSIX shell on the remote side,
# space-joined: plain words unchanged, anything else in single quotes. Used to
# build the scripts sent with `ssh --command=...`, where it reads better than
# printf '%q' (and the whole script is then %q-quoted once more by run_cmd).
sh_quote() {
  local out="" word
  for word in "$@"; do
    if [[ "$word" =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+="${out:+ }$word"
    else
      # ' -> '\'' with sed (the same on every bash); the "." keeps trailing newlines.
      word="$(printf '%s.' "$word" | sed "s/'/'\\\\''/g")"
      out+="${out:+ }'${word%.}'"
    fi
  done
  printf '%s' "$out"
}

# run_cmd CMD ARG...: run the command, or with DRY_RUN=1 print it as
# "+ cmd arg ..." (each word quoted with printf '%q', so the line can be
# pasted back into bash) and run nothing.
run_cmd() {
  if is_dry_run; then
    printf '+ %s\n' "$(quote_words "$@")"
    return 0
  fi
  printf '+ %s\n' "$(quote_words "$@")" >&2
  "$@"
}

# run_logged LOGFILE CMD ARG...: like run_cmd, with stdout and stderr also
# appended to LOGFILE (`CMD 2>&1 | tee -a LOGFILE`). Exit status is CMD's.
run_logged() {
  local log="$1"
  shift
  if is_dry_run; then
    printf '+ %s 2>&1 | tee -a %s\n' "$(quote_words "$@")" "$(printf '%q' "$log")"
    return 0
  fi
  printf '+ %s 2>&1 | tee -a %s\n' "$(quote_words "$@")" "$(printf '%q' "$log")" >&2
  "$@" 2>&1 | tee -a "$log"
}

# ---------------------------------------------------------------------------
# Validation.
# ---------------------------------------------------------------------------
# flag_for VAR: the flag spelling of a variable (TPU_NAME -> --tpu-name).
flag_for() {
  printf -- '--%s' "$(printf '%s' "$1" | tr '[:upper:]' '[:lower:]' | tr '_' '-')"
}

# require VAR...: exit with a clear message naming each unset variable.
require() {
  local var missing=()
  for var in "$@"; do
    if [[ -z "${!var:-}" ]]; then
      missing+=("$var")
    fi
  done
  if ((${#missing[@]})); then
    for var in "${missing[@]}"; do
      printf 'error: %s is required: set %s=... in the environment or pass %s=...\n' \
        "$var" "$var" "$(flag_for "$var")" >&2
    done
    exit 2
  fi
}

# require_tpu_target: the variables every gcloud tpu-vm call needs.
require_tpu_target() {
  require PROJECT ZONE TPU_NAME
}

# ---------------------------------------------------------------------------
# Argument parsing.
# ---------------------------------------------------------------------------
# A script sets, after sourcing this file and before parse_args "$@":
#   VALUE_FLAGS="project zone ..."   flags that take a value (--x=v or --x v)
#   BOOL_FLAGS="spot queued ..."      flags that set VAR=1 (--no-x sets 0)
#   LIST_FLAGS="env ..."              repeatable; appended to array ENV_LIST
#                                     (which the script initialises to ())
# and a usage() function. `--dry-run` and `--help` are always accepted.
VALUE_FLAGS=""
BOOL_FLAGS=""
LIST_FLAGS=""

_flag_var() {
  printf '%s' "$1" | tr '[:lower:]' '[:upper:]' | tr '-' '_'
}

# _in_list NEEDLE "SPACE SEPARATED LIST"
_in_list() {
  local needle="$1" list="$2" item
  for item in $list; do
    [[ "$item" == "$needle" ]] && return 0
  done
  return 1
}

parse_args() {
  local arg name value var
  while (($#)); do
    arg="$1"
    shift
    case "$arg" in
      -h | --help)
        usage
        exit 0
        ;;
      --)
        PASSTHROUGH=("$@")
        return 0
        ;;
      --dry-run) DRY_RUN=1 ;;
      --*)
        name="${arg#--}"
        value=""
        local has_value=0
        if [[ "$name" == *=* ]]; then
          value="${name#*=}"
          name="${name%%=*}"
          has_value=1
        fi
        if _in_list "$name" "$VALUE_FLAGS" || _in_list "$name" "$LIST_FLAGS"; then
          if ((!has_value)); then
            (($#)) || die "--$name needs a value (see --help)"
            value="$1"
            shift
          fi
          var="$(_flag_var "$name")"
          if _in_list "$name" "$LIST_FLAGS"; then
            # $var is one of the whitelisted names above, so eval is safe.
            eval "${var}_LIST+=(\"\$value\")"
          else
            printf -v "$var" '%s' "$value"
          fi
        elif _in_list "$name" "$BOOL_FLAGS"; then
          var="$(_flag_var "$name")"
          if ((has_value)); then
            printf -v "$var" '%s' "$value"
          else
            printf -v "$var" '%s' 1
          fi
        elif [[ "$name" == no-* ]] && _in_list "${name#no-}" "$BOOL_FLAGS" && ((!has_value)); then
          printf -v "$(_flag_var "${name#no-}")" '%s' 0
        else
          die "unknown option --$name (see --help)"
        fi
        ;;
      *)
        die "unexpected argument '$arg'; put pass-through arguments after '--' (see --help)"
        ;;
    esac
  done
}

# ---------------------------------------------------------------------------
# TPU helpers.
# ---------------------------------------------------------------------------
# default_runtime_version ACCELERATOR_TYPE: the TPU software version Google
# recommends for JAX on that generation ("" when unknown).
default_runtime_version() {
  case "$1" in
    v5p-*) printf '%s' v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) printf '%s' v2-alpha-tpuv5-lite ;;
    v6e-*) printf '%s' v2-alpha-tpuv6e ;;
    v2-* | v3-* | v4-*) printf '%s' tpu-ubuntu2204-base ;;
    *) printf '%s' "" ;;
  esac
}

# The two flags every gcloud TPU command gets.
gcloud_target_flags() {
  GCLOUD_TARGET=("--project=$PROJECT" "--zone=$ZONE")
}

resolve_remote_venv() {
  if [[ -z "$REMOTE_VENV" ]]; then
    REMOTE_VENV="$REMOTE_DIR/.venv"
  fi
}

resolve_queued_resource_id() {
  if [[ -z "$QUEUED_RESOURCE_ID" ]]; then
    QUEUED_RESOURCE_ID="$TPU_NAME"
  fi
}
