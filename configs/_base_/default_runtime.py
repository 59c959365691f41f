# mmpretrain's runtime with the hooks that keep a run's results right:
# - SafeCheckpointHook: CheckpointHook writing each file atomically and
#   deleting old ones only after the new one exists; the best checkpoint by
#   the teacher's top-1 and the three newest epochs are kept, the optimizer
#   state in the newest only;
# - EpochSeedHook: reseeds every epoch from (seed, epoch), so a resumed run
#   repeats an uninterrupted one;
# - NonFiniteLossHook: stops on a NaN or infinite loss before it reaches the
#   weights (tools/train.py --skip-nonfinite skips such steps instead);
# - SyncBuffersHook: averages BN statistics over the processes before
#   validation (idle in a single process).
_base_ = 'mmpretrain::_base_/default_runtime.py'
custom_imports = dict(imports=['teskd_mm'], allow_failed_imports=False)

default_hooks = dict(
    checkpoint=dict(
        type='SafeCheckpointHook',
        save_best='accuracy/top1',
        rule='greater',
        max_keep_ckpts=3,
        # The optimizer's state (as large as the weights with SGD momentum)
        # only in the newest epoch checkpoint, the one --resume reads; the
        # older ones and the best keep the weights. 'all' keeps it in every
        # epoch checkpoint, as mmengine does.
        resume_state='newest'))
custom_hooks = [
    dict(type='EpochSeedHook'),
    dict(type='NonFiniteLossHook'),
    dict(type='SyncBuffersHook'),
]
