# DTSKD on mmpretrain's CIFAR ResNet-18: the released recipe's network and
# loss (pooled fusion, historical and current teachers), on TESKD's CIFAR
# model. The memory holds one row per training image: set num_samples to the
# training set's size.
_base_ = './teskd_resnet18_cifar.py'

model = dict(
    neck=dict(type='DTSKDNeck'),
    head=dict(
        type='DTSKDHead',
        loss=dict(
            _delete_=True,
            type='DTSKDLoss',
            hist_weight=0.2,
            kd_weight=0.8,
            teacher_weight=3.0,
            student_weights=(1.0, 1.0, 1.0),
            temperature=4.0,
            decay='cos',
            cos_max=0.9,
            cos_min=0.0,
            # E of the schedule: None follows train_cfg.max_epochs.
            num_epochs=None,
            # One row per training image (CIFAR: 50,000, 80 MB in float32
            # with 100 classes; 'float16' halves it).
            num_samples=50000,
            memory_dtype='float32')))
