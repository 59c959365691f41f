"""tools/slurm_train.sh and tools/slurm_test.sh, and the slurm launcher.

What can be tested without a Slurm cluster:

- the scripts' own work: their argument checks, and the exact srun command
  line they build from their arguments and environment, read back from a
  stand-in ``srun`` on PATH that records its arguments;
- ``--launcher slurm`` in the tools: the stand-in ``srun`` then runs the
  command as the one task of a job, with the variables srun would set
  (SLURM_PROCID, SLURM_NTASKS, SLURM_NODELIST) given by hand, so that
  train.py starts its process group from them (test.py makes the same
  call), over gloo on this CPU-only machine (``init_cpu_distributed``;
  mmengine's own slurm set-up calls ``torch.cuda.set_device`` and defaults
  to nccl);
- that the variables are derived from Slurm's exactly as mmengine's
  ``_init_dist_slurm`` derives them, with a stand-in ``scontrol``.

What srun itself does (allocation, placing tasks on nodes, several
processes) is not tested here.
"""
import os
import os.path as osp
import stat
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, free_port, write_tiny_config

SCRIPTS = {
    # script: (tool, the 4th positional argument, the advice when no srun)
    'slurm_train.sh': ('train.py', 'WORK_DIR',
                       'tools/dist_train.sh CONFIG GPUS'),
    'slurm_test.sh': ('test.py', 'CHECKPOINT',
                      'tools/dist_test.sh CONFIG CHECKPOINT GPUS'),
}

# A stand-in for srun: it records its arguments, one per NUL, and with
# FAKE_SRUN_RUN set runs the command after its options as the job's one task.
FAKE_SRUN = r"""#!/usr/bin/env bash
printf '%s\0' "$@" > "$FAKE_SRUN_LOG"
if [ -n "${FAKE_SRUN_RUN:-}" ]; then
    while [ "$#" -gt 0 ]; do
        case "$1" in
            -p) shift 2 ;;
            -*) shift ;;
            *) break ;;
        esac
    done
    exec "$@"
fi
"""
# A stand-in for scontrol: `scontrol show hostname[s] LIST` for one list.
FAKE_SCONTROL = r"""#!/usr/bin/env bash
echo "$*" >> "$FAKE_SCONTROL_LOG"
if [ "$3" = "node[01-02],gpu7" ]; then
    printf 'node01\nnode02\ngpu7\n'
else
    echo "scontrol: error: Invalid node name specified" >&2
    exit 1
fi
"""


def write_exe(folder, name: str, text: str) -> str:
    path = osp.join(str(folder), name)
    with open(path, 'w') as f:
        f.write(text)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR)
    return path


def path_without(*commands: str) -> str:
    """PATH less the folders holding any of ``commands`` (on a Slurm
    cluster, the real srun and scontrol)."""
    return os.pathsep.join(
        d for d in os.environ.get('PATH', '').split(os.pathsep)
        if d and not any(osp.exists(osp.join(d, c)) for c in commands))


@pytest.fixture
def fake_srun(tmp_path):
    """A folder with the stand-in srun, and the file it records into."""
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    write_exe(bin_dir, 'srun', FAKE_SRUN)
    return str(bin_dir), str(tmp_path / 'srun_args')


def run_script(script, *args, path, env=None):
    full_env = {
        k: v
        for k, v in os.environ.items()
        if k not in ('GPUS', 'GPUS_PER_NODE', 'CPUS_PER_TASK', 'SRUN_ARGS',
                     'PYTHON') and not k.startswith('SLURM_')
    }
    full_env.update(env or {}, PATH=path)
    return subprocess.run(['bash', f'tools/{script}', *args],
                          cwd=ROOT,
                          env=full_env,
                          capture_output=True,
                          text=True,
                          timeout=600)


def srun_args(log: str):
    with open(log) as f:
        return f.read().split('\0')[:-1]


# -- the scripts --------------------------------------------------------------
@pytest.mark.parametrize('script', SCRIPTS)
@pytest.mark.parametrize('nargs', [0, 1, 3])
def test_too_few_arguments_print_the_usage(script, nargs, fake_srun):
    bin_dir, log = fake_srun
    args = ['part', 'job', 'cfg.py'][:nargs]
    proc = run_script(script, *args, path=bin_dir + os.pathsep +
                      path_without('srun'), env=dict(FAKE_SRUN_LOG=log))
    tool, fourth, _ = SCRIPTS[script]
    assert proc.returncode == 2
    assert proc.stderr == (f'usage: {script} PARTITION JOB_NAME CONFIG '
                           f'{fourth} [{tool} options]\n')
    assert not osp.exists(log), 'srun was called'


@pytest.mark.parametrize('script', SCRIPTS)
def test_without_srun_one_line_says_what_to_use(script):
    proc = run_script(script, 'part', 'job', 'cfg.py', 'x',
                      path=path_without('srun'))
    assert proc.returncode == 2
    assert proc.stderr == (
        f'{script}: error: srun not found: these scripts submit to a Slurm '
        f'cluster; on one machine use {SCRIPTS[script][2]}\n')
    assert proc.stdout == ''


@pytest.mark.parametrize('script', SCRIPTS)
def test_srun_gets_the_defaults(script, fake_srun):
    bin_dir, log = fake_srun
    proc = run_script(script, 'gpu', 'teskd', 'configs/a b.py', 'w',
                      path=bin_dir + os.pathsep + path_without('srun'),
                      env=dict(FAKE_SRUN_LOG=log))
    assert proc.returncode == 0, proc.stderr
    tool = SCRIPTS[script][0]
    tail = ['configs/a b.py', '--work-dir=w'] if tool == 'train.py' else \
        ['configs/a b.py', 'w']
    assert srun_args(log) == [
        '-p', 'gpu', '--job-name=teskd', '--gres=gpu:8', '--ntasks=8',
        '--ntasks-per-node=8', '--cpus-per-task=5', '--kill-on-bad-exit=1',
        'python', '-u', f'tools/{tool}', *tail, '--launcher=slurm'
    ]


@pytest.mark.parametrize('script', SCRIPTS)
def test_srun_gets_the_environment_and_the_tool_its_options(
        script, fake_srun):
    bin_dir, log = fake_srun
    env = dict(FAKE_SRUN_LOG=log, GPUS='16', GPUS_PER_NODE='4',
               CPUS_PER_TASK='2', SRUN_ARGS='--qos=high  --time 1:00:00',
               PYTHON='/opt/py/bin/python3')
    proc = run_script(script, 'p1', 'j1', 'c.py', 'x', '--cfg-options',
                      'a=1 2', 'b=3', path=bin_dir + os.pathsep +
                      path_without('srun'), env=env)
    assert proc.returncode == 0, proc.stderr
    tool = SCRIPTS[script][0]
    tail = ['c.py', '--work-dir=x'] if tool == 'train.py' else ['c.py', 'x']
    assert srun_args(log) == [
        '-p', 'p1', '--job-name=j1', '--gres=gpu:4', '--ntasks=16',
        '--ntasks-per-node=4', '--cpus-per-task=2', '--kill-on-bad-exit=1',
        '--qos=high', '--time', '1:00:00', '/opt/py/bin/python3', '-u',
        f'tools/{tool}', *tail, '--launcher=slurm', '--cfg-options',
        'a=1 2', 'b=3'
    ]


@pytest.mark.parametrize('script', SCRIPTS)
@pytest.mark.parametrize('var,value', [('GPUS', '0'), ('GPUS_PER_NODE', 'x'),
                                       ('CPUS_PER_TASK', '-1')])
def test_counts_that_srun_would_refuse_are_refused_first(
        script, var, value, fake_srun):
    bin_dir, log = fake_srun
    proc = run_script(script, 'p', 'j', 'c.py', 'x',
                      path=bin_dir + os.pathsep + path_without('srun'),
                      env={'FAKE_SRUN_LOG': log, var: value})
    assert proc.returncode == 2
    assert proc.stderr == \
        f'{script}: error: {var}={value} must be a positive integer\n'
    assert not osp.exists(log)


# -- Slurm's variables to torch's, as mmengine derives them -------------------
TORCH_VARS = ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR',
              'MASTER_PORT')


@pytest.fixture
def slurm_env(monkeypatch, tmp_path):
    """A task's Slurm variables, torch's variables cleared (and all put back
    afterwards, also those mmengine's own set-up writes directly), a
    stand-in scontrol on PATH."""
    saved = dict(os.environ)
    yield _slurm_env(monkeypatch, tmp_path)
    monkeypatch.undo()
    os.environ.clear()
    os.environ.update(saved)


def _slurm_env(monkeypatch, tmp_path):
    for key in TORCH_VARS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv('SLURM_PROCID', '5')
    monkeypatch.setenv('SLURM_NTASKS', '8')
    monkeypatch.setenv('SLURM_LOCALID', '1')
    monkeypatch.setenv('SLURM_NODELIST', 'node[01-02],gpu7')
    bin_dir = tmp_path / 'bin'
    bin_dir.mkdir()
    write_exe(bin_dir, 'scontrol', FAKE_SCONTROL)
    monkeypatch.setenv('FAKE_SCONTROL_LOG', str(tmp_path / 'scontrol_log'))
    monkeypatch.setenv('PATH', str(bin_dir) + os.pathsep +
                       path_without('scontrol'))
    return monkeypatch


def torch_vars():
    return {k: os.environ.get(k) for k in TORCH_VARS}


def mmengine_slurm_vars(monkeypatch):
    """The variables mmengine's ``_init_dist_slurm`` sets, without its
    CUDA device and process group."""
    import mmengine.dist.utils as dist_utils
    monkeypatch.setattr(dist_utils.torch.cuda, 'set_device', lambda i: None)
    monkeypatch.setattr(dist_utils.torch_dist, 'init_process_group',
                        lambda **kwargs: None)
    dist_utils._init_dist_slurm('gloo')
    return torch_vars()


@pytest.mark.parametrize('preset', [{}, {'MASTER_PORT': '12345'},
                                    {'MASTER_ADDR': '10.0.0.9'}])
def test_slurm_variables_become_torch_ones_as_in_mmengine(slurm_env, preset):
    from teskd_mm.utils.runtime import slurm_to_torch_env
    for key, value in preset.items():
        slurm_env.setenv(key, value)
    slurm_to_torch_env()
    ours = torch_vars()
    assert ours == dict(RANK='5', WORLD_SIZE='8', LOCAL_RANK='1',
                        MASTER_ADDR=preset.get('MASTER_ADDR', 'node01'),
                        MASTER_PORT=preset.get('MASTER_PORT', '29500'))
    for key in TORCH_VARS:
        if key not in preset:
            os.environ.pop(key)
    assert mmengine_slurm_vars(slurm_env) == ours
    if 'MASTER_ADDR' not in preset:
        with open(os.environ['FAKE_SCONTROL_LOG']) as f:
            assert f.readline() == 'show hostnames node[01-02],gpu7\n'


def test_without_scontrol_a_short_form_list_needs_master_addr(slurm_env):
    from teskd_mm.utils.runtime import slurm_master_addr, slurm_to_torch_env
    slurm_env.setenv('PATH', path_without('scontrol'))
    with pytest.raises(RuntimeError, match='set MASTER_ADDR'):
        slurm_to_torch_env()
    # A list of one plain host needs no expanding.
    assert slurm_master_addr('localhost') == 'localhost'
    slurm_env.setenv('MASTER_ADDR', '10.0.0.9')
    slurm_to_torch_env()
    assert os.environ['MASTER_ADDR'] == '10.0.0.9'


def test_a_list_scontrol_refuses_is_named(slurm_env):
    from teskd_mm.utils.runtime import slurm_master_addr
    with pytest.raises(RuntimeError, match='Invalid node name'):
        slurm_master_addr('bad[')


def test_a_process_not_started_by_srun_is_told_so(slurm_env):
    from teskd_mm.utils.runtime import init_cpu_distributed
    slurm_env.delenv('SLURM_NTASKS')
    slurm_env.delenv('SLURM_NODELIST')
    with pytest.raises(RuntimeError,
                       match='reads SLURM_NTASKS, SLURM_NODELIST, which srun'):
        init_cpu_distributed('slurm')
    assert not torch.distributed.is_initialized()


# -- one task through the scripts and the tools -------------------------------
SMALL = """
train_dataloader = dict(dataset=dict(indices=8))
val_dataloader = dict(dataset=dict(indices=8))
train_cfg = dict(max_epochs=1)
"""


@pytest.mark.skipif(torch.cuda.is_available(),
                    reason='on a GPU the slurm launcher is mmengine\'s own')
def test_one_task_trains_with_the_slurm_launcher(
        tmp_path, cifar10_mini, fake_srun):
    """The job's one task, as srun would start it on a CPU node: the
    process group is started over gloo from the Slurm variables, and the
    run is the same distributed run as under tools/dist_train.sh."""
    bin_dir, log = fake_srun
    cfg = write_tiny_config(str(tmp_path / 'tiny.py'), cifar10_mini, SMALL)
    work = str(tmp_path / 'work')
    env = dict(FAKE_SRUN_LOG=log, FAKE_SRUN_RUN='1', GPUS='1',
               GPUS_PER_NODE='1', PYTHON=sys.executable, OMP_NUM_THREADS='2',
               SLURM_PROCID='0', SLURM_NTASKS='1', SLURM_LOCALID='0',
               SLURM_NODELIST='localhost', MASTER_ADDR='127.0.0.1',
               MASTER_PORT=free_port())
    path = bin_dir + os.pathsep + path_without('srun', 'scontrol')
    proc = run_script('slurm_train.sh', 'cpu', 'tiny', cfg, work, path=path,
                      env=env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert 'Distributed launcher: slurm' in out
    assert 'Distributed training: True' in out
    assert "dist_cfg: {'backend': 'gloo'}" in out
    assert 'Epoch(train) [1][2/2]' in out
    assert 'accuracy/top1' in out  # validated across the (one) process
    assert osp.isfile(osp.join(work, 'epoch_1.pth'))
    # tools/test.py starts its group with the same call (not run here, to
    # keep this file fast); slurm_test.sh's command line is tested above.
