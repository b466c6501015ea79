"""A function's outputs may be torch tensors, on the CPU or a GPU; torch is never imported unless one is returned.

A CPU tensor becomes a numpy view of its memory (no copy). A GPU tensor stays where it is until its bytes are
written into the worker's shared memory: `DeviceArray.copy_into` copies them from the device straight into the
block the client's response is read from, so no host copy is made in between. Outputs in another dtype than
declared are cast where they are (on the GPU for a GPU tensor), as numpy outputs are.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["DeviceArray", "from_torch", "is_torch_tensor"]


def is_torch_tensor(value: Any) -> bool:
    """Whether ``value`` is a torch tensor (by its type's module: no import of torch)."""
    return type(value).__module__.startswith("torch") and hasattr(value, "device") and hasattr(value, "dtype")


class DeviceArray:
    """A tensor on a GPU, seen as far as the output path needs: ``shape``, ``dtype`` (numpy's), ``size``, and
    `copy_into` a numpy array of host memory."""

    def __init__(self, tensor: Any, dtype: np.dtype[Any]) -> None:
        self.tensor, self.dtype = tensor, dtype
        self.shape = tuple(tensor.shape)
        self.ndim = len(self.shape)
        self.size = int(tensor.numel())

    def copy_into(self, out: np.ndarray) -> None:
        """Copy the tensor's elements from the device into ``out`` (host memory: here, shared memory)."""
        import torch

        torch.from_numpy(out).copy_(self.tensor)

    def __getitem__(self, index: Any) -> DeviceArray:  # rows of a batch's output, as @batch splits them
        return DeviceArray(self.tensor[index], self.dtype)

    def __len__(self) -> int:
        return self.shape[0] if self.shape else 0

    def __repr__(self) -> str:
        return f"DeviceArray(shape={list(self.shape)}, dtype={self.dtype}, device={self.tensor.device})"


def from_torch(tensor: Any, expected: np.dtype[Any], strict: bool) -> np.ndarray | DeviceArray:
    """``tensor`` as an output of dtype ``expected``: a numpy view (CPU) or a `DeviceArray` (GPU). A dtype other
    than ``expected`` is cast (numpy's ``same_kind`` rule); with ``strict``, or when it cannot be, `TypeError`."""
    import torch

    tensor = tensor.detach()
    if tensor.is_conj() or tensor.is_neg():
        tensor = tensor.resolve_conj().resolve_neg()
    dtype = _numpy_dtype(tensor.dtype)
    if dtype != expected:
        if strict or dtype is None or not np.can_cast(dtype, expected, "same_kind"):
            raise TypeError(f"got a torch tensor of {tensor.dtype}")
        tensor = tensor.to(_torch_dtype(torch, expected))
    if tensor.device.type == "cpu":
        return tensor.contiguous().numpy()
    return DeviceArray(tensor.contiguous(), expected)


def _numpy_dtype(torch_dtype: Any) -> np.dtype[Any] | None:
    import torch

    try:
        return np.dtype(torch.empty(0, dtype=torch_dtype).numpy().dtype)
    except TypeError:  # bfloat16 and the like: numpy has no such dtype
        return None


def _torch_dtype(torch: Any, dtype: np.dtype[Any]) -> Any:
    return torch.from_numpy(np.empty(0, dtype=dtype)).dtype
