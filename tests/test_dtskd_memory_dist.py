"""PredictionMemory in two real processes over gloo.

Kept apart from the other tests so that the processes load only torch,
mmengine and the memory's own module file.
"""
import importlib.util
import os.path as osp

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from conftest import ROOT

MEMORY_FILE = osp.join(ROOT, 'teskd_mm', 'models', 'utils',
                       'prediction_memory.py')


def _load_memory_class():
    spec = importlib.util.spec_from_file_location('prediction_memory',
                                                  MEMORY_FILE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.PredictionMemory


def _predictions(n, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.softmax(torch.randn(n, 4, 3, generator=g), dim=2)


def _worker(rank, init_file):
    torch.set_num_threads(1)
    dist.init_process_group('gloo', init_method=f'file://{init_file}',
                            rank=rank, world_size=2)
    try:
        memory = _load_memory_class()(num_samples=8, dtype='float32')
        # Step 1: unequal batches; rank 0 sees samples 0-2, rank 1 sees 5, 3.
        batches = {0: torch.tensor([0, 1, 2]), 1: torch.tensor([5, 3])}
        preds = {0: _predictions(3, seed=0), 1: _predictions(2, seed=1)}
        memory.write(batches[rank], preds[rank])
        # Step 2: rank 1's batch is empty; rank 0 rewrites sample 1.
        late = _predictions(1, seed=2)
        if rank == 0:
            memory.write(torch.tensor([1]), late)
        else:
            memory.write(torch.zeros(0, dtype=torch.long),
                         torch.zeros(0, 4, 3))

        # Next epoch the sampler swaps them: each reads the other's rows.
        if rank == 0:
            rows, written = memory.read(torch.tensor([3, 5, 4]))
            assert written.tolist() == [True, True, False]
            torch.testing.assert_close(rows[0], preds[1][1])
            torch.testing.assert_close(rows[1], preds[1][0])
            assert rows[2].abs().sum() == 0
        else:
            rows, written = memory.read(torch.tensor([2, 1, 0]))
            assert written.all()
            torch.testing.assert_close(rows[0], preds[0][2])
            torch.testing.assert_close(rows[1], late[0])
            torch.testing.assert_close(rows[2], preds[0][0])
        # Every process holds the whole memory, identical to the others'.
        assert memory.written.tolist() == [True, True, True, True, False,
                                           True, False, False]
        everyone = [torch.zeros_like(memory.predictions) for _ in range(2)]
        dist.all_gather(everyone, memory.predictions)
        assert torch.equal(everyone[0], everyone[1])
    finally:
        dist.destroy_process_group()


def test_rows_written_on_one_process_are_read_on_another(tmp_path):
    _load_memory_class()  # import mmengine once, before forking
    # Forked like DataLoader workers (one thread each) to skip re-importing
    # torch; raises here if an assertion fails in either process.
    mp.start_processes(
        _worker,
        args=(str(tmp_path / 'init'), ),
        nprocs=2,
        join=True,
        start_method='fork')
