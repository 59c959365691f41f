# Sourced by tools/slurm_train.sh and tools/slurm_test.sh: the checks and the
# srun command they share.
# slurm_run HINT PARTITION JOB_NAME TOOL [TOOL ARGS...] runs GPUS processes
# of tools/TOOL with srun (GPUS_PER_NODE per node, CPUS_PER_TASK each, more
# srun options in SRUN_ARGS, the interpreter in PYTHON); HINT is what to use
# on one machine instead, for the message when srun is missing.
slurm_run() {
    local hint=$1 partition=$2 job_name=$3 tool=$4
    shift 4
    if ! command -v srun >/dev/null 2>&1; then
        echo "$NAME: error: srun not found: these scripts submit to a Slurm" \
            "cluster; on one machine use $hint" >&2
        exit 2
    fi
    GPUS=${GPUS:-8}
    GPUS_PER_NODE=${GPUS_PER_NODE:-8}
    CPUS_PER_TASK=${CPUS_PER_TASK:-5}
    for var in GPUS GPUS_PER_NODE CPUS_PER_TASK; do
        # srun would reject them too, but only after the job waited in the
        # queue.
        if ! [[ ${!var} =~ ^[1-9][0-9]*$ ]]; then
            echo "$NAME: error: $var=${!var} must be a positive integer" >&2
            exit 2
        fi
    done
    # SRUN_ARGS holds any number of srun options: split on spaces on purpose.
    # shellcheck disable=SC2086
    exec srun -p "$partition" --job-name="$job_name" \
        --gres=gpu:"$GPUS_PER_NODE" --ntasks="$GPUS" \
        --ntasks-per-node="$GPUS_PER_NODE" --cpus-per-task="$CPUS_PER_TASK" \
        --kill-on-bad-exit=1 ${SRUN_ARGS:-} \
        "${PYTHON:-python}" -u "$(dirname "$0")/$tool" "$@"
}
