#!/usr/bin/env bash
# Usage: tools/slurm_test.sh PARTITION JOB_NAME CONFIG CHECKPOINT [test.py options]
# Starts GPUS evaluation processes on the Slurm partition PARTITION with
# srun, GPUS_PER_NODE of them per node; each runs tools/test.py
# --launcher=slurm, and the metrics are gathered over all of them.
# Environment: GPUS (default 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5),
# SRUN_ARGS (more srun options, split on spaces), PYTHON (python).
set -euo pipefail
NAME=$(basename "$0")
if [ "$#" -lt 4 ]; then
    echo "usage: $NAME PARTITION JOB_NAME CONFIG CHECKPOINT [test.py options]" >&2
    exit 2
fi
# shellcheck source=tools/slurm_common.sh
. "$(dirname "$0")/slurm_common.sh"
slurm_run "tools/dist_test.sh CONFIG CHECKPOINT GPUS" "$1" "$2" test.py \
    "$3" "$4" --launcher=slurm "${@:5}"
