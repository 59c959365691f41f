"""A per-sample memory of softmax predictions, shared by all processes."""
from typing import Optional, Sequence, Tuple

import torch
import torch.nn as nn
from mmengine.dist import all_gather, get_world_size

MEMORY_DTYPES = {
    'float32': torch.float32,
    'float16': torch.float16,
    'bfloat16': torch.bfloat16,
}


class PredictionMemory(nn.Module):
    """The predictions each head last made on each training sample.

    Row ``i`` holds, for the sample whose index in the data set is ``i`` (the
    ``sample_idx`` that mmengine's ``BaseDataset`` gives every sample and
    mmpretrain's ``PackInputs`` keeps in the metainfo), one probability
    vector per head, shape ``(num_heads, num_classes)``, plus a flag that it
    was written. Rows not yet written read as "not written", so the caller
    falls back to the label (the one-hot start of DTSKD's history).

    :meth:`write` first gathers the batch's ``(indices, predictions)`` from
    every process, so after each step every process holds every row, whoever
    saw the sample; the next epoch reads it correctly wherever the sampler
    sends the sample. Every process must therefore call :meth:`write` the
    same number of times (once per training step, as DDP training does).

    Cost: ``rows x num_heads x num_classes`` values plus one byte per row,
    in host memory whatever the model's device (only a batch's rows travel
    to it), once per process, and once more on disk: the memory is
    ``resume_only_state``, which ``SafeCheckpointHook`` keeps in the newest
    epoch checkpoint only (best checkpoints, for testing and deployment,
    leave it out). With
    the four heads of DTSKD: CIFAR-100 (50,000 x 4 x 100) takes 80 MB in
    ``float32`` and 40 MB in ``float16``; ImageNet-1k (1,281,167 x 4 x 1000)
    takes 20.5 GB and 10.2 GB. ``float16`` keeps about three significant
    digits of each probability, ample for a soft target; :meth:`nbytes`
    gives the figure for any size.

    The memory is saved in ``state_dict`` as ``<prefix>predictions`` and
    ``<prefix>written`` (empty before the first write), so mmengine's
    checkpoints carry it and a resumed run gets it back exactly. It is not a
    buffer: ``model.to(device)`` leaves it in host memory and DDP does not
    broadcast it.

    Args:
        num_samples (int, optional): Rows to hold, the size of the training
            set. An index beyond it is an error. Defaults to None: the memory
            grows to the largest index written.
        dtype (str): Storage type, ``'float32'`` (default), ``'float16'`` or
            ``'bfloat16'``.
    """

    # State that only resuming needs; see SafeCheckpointHook.
    resume_only_state = ('predictions', 'written')

    def __init__(self,
                 num_samples: Optional[int] = None,
                 dtype: str = 'float32') -> None:
        super().__init__()
        if dtype not in MEMORY_DTYPES:
            raise ValueError(f'PredictionMemory dtype={dtype!r} is not one '
                             f'of {tuple(MEMORY_DTYPES)}.')
        if num_samples is not None and int(num_samples) <= 0:
            raise ValueError(
                f'PredictionMemory num_samples={num_samples} must be a '
                'positive integer (the size of the training set), or None '
                'to grow with the indices written.')
        self.num_samples = None if num_samples is None else int(num_samples)
        self.dtype = dtype
        self.predictions = torch.empty(0, 0, 0, dtype=MEMORY_DTYPES[dtype])
        self.written = torch.zeros(0, dtype=torch.bool)
        # The rows the last write replaced, for undo_last_write.
        self._undo: Optional[Tuple[torch.Tensor, torch.Tensor,
                                   torch.Tensor]] = None

    def check_training_data(self, dataset_cfg: dict, num_images: int) -> None:
        """Refuse training data this memory cannot key correctly.

        A ``ConcatDataset`` restarts ``sample_idx`` at 0 in each part, so
        images of different parts would share a row; ``num_samples`` below
        the number of images would stop training at the first sample beyond.

        Args:
            dataset_cfg (dict): ``train_dataloader.dataset`` of the config.
            num_images (int): Images in the training set (0 if unknown).

        Raises:
            ValueError: What is wrong and the fix.
        """
        stack = [dataset_cfg]
        while stack:
            ds = stack.pop()
            if not isinstance(ds, dict):
                continue
            if ds.get('datasets'):
                raise ValueError(
                    'DTSKD keys its prediction memory by each sample\'s '
                    'sample_idx, which train_dataloader.dataset '
                    f'({ds.get("type")}) restarts at 0 in each of its parts, '
                    'so images of different parts would share a memory row; '
                    'train on one data set (e.g. one CustomDataset over all '
                    'the images, or one ann_file listing them).')
            if 'dataset' in ds:
                stack.append(ds['dataset'])
        if self.num_samples is not None and self.num_samples < num_images:
            raise ValueError(
                f'DTSKD\'s prediction memory has num_samples='
                f'{self.num_samples} rows, one per training image, but '
                f'train_dataloader.dataset holds {num_images} images; set '
                f'model.head.loss.num_samples={num_images} (or None to size '
                'it from the data as it comes).')

    @staticmethod
    def nbytes(num_samples: int, num_heads: int, num_classes: int,
               dtype: str = 'float32') -> int:
        """Bytes one process needs for a memory of this size."""
        itemsize = torch.empty(0, dtype=MEMORY_DTYPES[dtype]).element_size()
        return num_samples * (num_heads * num_classes * itemsize + 1)

    @property
    def num_rows(self) -> int:
        """Rows allocated so far."""
        return self.written.numel()

    def _check_indices(self, indices: torch.Tensor) -> torch.Tensor:
        indices = torch.as_tensor(indices).reshape(-1).long()
        if indices.numel() and int(indices.min()) < 0:
            raise ValueError(
                f'Sample indices must be >= 0, got {int(indices.min())}.')
        if self.num_samples is not None and indices.numel() and \
                int(indices.max()) >= self.num_samples:
            raise IndexError(
                f'Sample index {int(indices.max())} is beyond the memory\'s '
                f'num_samples={self.num_samples}; set num_samples to the '
                'size of the training set (len(dataset)), or to None to '
                'size the memory as it goes.')
        return indices

    def read(self,
             indices: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """The rows of ``indices``, on the device of ``indices``.

        Args:
            indices (Tensor): Sample indices, ``(N,)``.

        Returns:
            tuple[Tensor, Tensor]: ``float32`` predictions
            ``(N, num_heads, num_classes)`` (zeros where not written; empty
            before the first write) and the ``(N,)`` bool mask of rows
            written.
        """
        device = torch.as_tensor(indices).device
        indices = self._check_indices(indices).cpu()
        inside = indices < self.num_rows
        written = torch.zeros(indices.numel(), dtype=torch.bool)
        rows = torch.zeros(indices.numel(), *self.predictions.shape[1:])
        written[inside] = self.written[indices[inside]]
        rows[inside] = self.predictions[indices[inside]].float()
        return rows.to(device), written.to(device)

    @staticmethod
    def _gather(indices: torch.Tensor,
                predictions: torch.Tensor) -> Tuple[torch.Tensor,
                                                     torch.Tensor]:
        """Concatenate every process's batch, padding to a common size."""
        if get_world_size() == 1:
            return indices, predictions
        count = torch.tensor([indices.numel()], device=indices.device)
        longest = max(int(c) for c in all_gather(count))
        pad = longest - indices.numel()
        indices = torch.cat([indices, indices.new_full((pad, ), -1)])
        predictions = torch.cat(
            [predictions, predictions.new_zeros(pad, *predictions.shape[1:])])
        indices = torch.cat(all_gather(indices))
        predictions = torch.cat(all_gather(predictions))
        keep = indices >= 0
        return indices[keep], predictions[keep]

    def _allocate(self, rows: int, shape: Sequence[int]) -> None:
        """Grow to ``rows`` rows of ``shape``, keeping what is there."""
        if self.num_rows and tuple(self.predictions.shape[1:]) != shape:
            raise ValueError(
                f'The memory holds {tuple(self.predictions.shape[1:])} '
                f'(heads, classes) per sample but got predictions of shape '
                f'{shape}; the model\'s heads or classes changed since it '
                'was written (a checkpoint of another model?).')
        if rows <= self.num_rows:
            return
        predictions = torch.zeros(
            rows, *shape, dtype=MEMORY_DTYPES[self.dtype])
        written = torch.zeros(rows, dtype=torch.bool)
        if self.num_rows:
            predictions[:self.num_rows] = self.predictions
            written[:self.num_rows] = self.written
        self.predictions, self.written = predictions, written

    @torch.no_grad()
    def write(self, indices: torch.Tensor, predictions: torch.Tensor) -> None:
        """Store the predictions of a batch, from every process.

        Args:
            indices (Tensor): Sample indices of this process's batch,
                ``(N,)``.
            predictions (Tensor): Their probabilities,
                ``(N, num_heads, num_classes)``.
        """
        indices = self._check_indices(indices).to(predictions.device)
        if predictions.dim() != 3 or predictions.size(0) != indices.numel():
            raise ValueError(
                f'predictions must be (N, num_heads, num_classes) with N = '
                f'{indices.numel()} indices, got {tuple(predictions.shape)}.')
        indices, predictions = self._gather(indices,
                                            predictions.detach().float())
        indices, predictions = indices.cpu(), predictions.cpu()
        if not indices.numel():
            return
        rows = self.num_samples or int(indices.max()) + 1
        self._allocate(rows, tuple(predictions.shape[1:]))
        self._undo = (indices, self.predictions[indices].clone(),
                      self.written[indices].clone())
        self.predictions[indices] = predictions.to(self.predictions.dtype)
        self.written[indices] = True

    @torch.no_grad()
    def undo_last_write(self) -> None:
        """Put back the rows the last :meth:`write` replaced, as for a
        training step that is skipped after its forward pass. Every process
        undoes the same rows, as every process wrote them."""
        if self._undo is None:
            return
        # Copies saved before the write: a repeated index holds its old row
        # in every copy.
        indices, predictions, written = self._undo
        self.predictions[indices] = predictions
        self.written[indices] = written
        self._undo = None

    def _save_to_state_dict(self, destination, prefix, keep_vars) -> None:
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + 'predictions'] = self.predictions
        destination[prefix + 'written'] = self.written

    def _load_from_state_dict(self, state_dict, prefix, local_metadata,
                              strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        keys = (prefix + 'predictions', prefix + 'written')
        if all(k in state_dict for k in keys):
            predictions, written = (state_dict[k] for k in keys)
            if predictions.dim() != 3 or written.dim() != 1 or \
                    predictions.size(0) != written.numel():
                raise ValueError(
                    f'{keys[0]} {tuple(predictions.shape)} and {keys[1]} '
                    f'{tuple(written.shape)} are not a prediction memory of '
                    '(rows, heads, classes) and (rows,).')
            if self.num_samples is not None and written.numel() and \
                    written.numel() != self.num_samples:
                raise ValueError(
                    f'The checkpoint\'s prediction memory has '
                    f'{written.numel()} rows but num_samples='
                    f'{self.num_samples}; it was written for another data '
                    'set. Set num_samples to the training set\'s size.')
            # Copies: the state may be shared with another module.
            self.predictions = predictions.detach().to(
                'cpu', MEMORY_DTYPES[self.dtype], copy=True)
            self.written = written.detach().to('cpu', torch.bool, copy=True)
        elif strict:
            missing_keys.extend(k for k in keys if k not in state_dict)
        super()._load_from_state_dict(state_dict, prefix, local_metadata,
                                      strict, missing_keys, unexpected_keys,
                                      error_msgs)
        # nn.Module counts keys that are no parameter or buffer as
        # unexpected; these two are this module's own.
        for k in keys:
            if k in unexpected_keys:
                unexpected_keys.remove(k)

    def extra_repr(self) -> str:
        return (f'num_samples={self.num_samples}, dtype={self.dtype!r}, '
                f'rows={self.num_rows}, '
                f'written={int(self.written.sum())}')
