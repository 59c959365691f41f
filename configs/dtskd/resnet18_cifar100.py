# DTSKD with a CIFAR ResNet-18 on CIFAR-100: the released recipe. The
# network, the loss and the length of the schedule differ from TESKD's
# recipe; data, optimizer and runtime are the same.
_base_ = ['../teskd/resnet18_cifar100.py']

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
            # E of the schedule: None follows train_cfg.max_epochs (300).
            num_epochs=None,
            # One row per training image; 80 MB in float32, 'float16' halves.
            num_samples=50000,
            memory_dtype='float32')))

param_scheduler = dict(milestones=[150, 225])
train_cfg = dict(max_epochs=300)
