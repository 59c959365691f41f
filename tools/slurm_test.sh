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
if ! command -v srun >/dev/null 2>&1; then
    echo "$NAME: error: srun not found: these scripts submit to a Slurm" \
        "cluster; on one machine use tools/dist_test.sh CONFIG CHECKPOINT" \
        "GPUS" >&2
    exit 2
fi
PARTITION=$1
JOB_NAME=$2
CONFIG=$3
CHECKPOINT=$4
GPUS=${GPUS:-8}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
CPUS_PER_TASK=${CPUS_PER_TASK:-5}
for var in GPUS GPUS_PER_NODE CPUS_PER_TASK; do
    # srun would reject them too, but only after the job waited in the queue.
    if ! [[ ${!var} =~ ^[1-9][0-9]*$ ]]; then
        echo "$NAME: error: $var=${!var} must be a positive integer" >&2
        exit 2
    fi
done
# SRUN_ARGS holds any number of srun options: split on spaces on purpose.
# shellcheck disable=SC2086
exec srun -p "$PARTITION" --job-name="$JOB_NAME" \
    --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
    --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" \
    --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
    "${PYTHON:-python}" -u "$(dirname "$0")/test.py" "$CONFIG" "$CHECKPOINT" \
    --launcher=slurm "${@:5}"
