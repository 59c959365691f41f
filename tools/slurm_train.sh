#!/usr/bin/env bash
# Usage: tools/slurm_train.sh PARTITION JOB_NAME CONFIG WORK_DIR [train.py options]
# Starts GPUS training processes on the Slurm partition PARTITION with srun,
# GPUS_PER_NODE of them per node; each runs tools/train.py --launcher=slurm,
# and mmengine's Runner starts the process group from the SLURM_* variables
# that srun sets (on nodes without a GPU, tools/train.py starts it over gloo).
# Environment: GPUS (default 8), GPUS_PER_NODE (8), CPUS_PER_TASK (5),
# SRUN_ARGS (more srun options, split on spaces), PYTHON (python).
set -euo pipefail
NAME=$(basename "$0")
if [ "$#" -lt 4 ]; then
    echo "usage: $NAME PARTITION JOB_NAME CONFIG WORK_DIR [train.py options]" >&2
    exit 2
fi
# shellcheck source=tools/slurm_common.sh
. "$(dirname "$0")/slurm_common.sh"
slurm_run "tools/dist_train.sh CONFIG GPUS" "$1" "$2" train.py "$3" \
    --work-dir="$4" --launcher=slurm "${@:5}"
