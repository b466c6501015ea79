"""PyTriton's `Tensor` (``pytriton.model_config.tensor``): name optional, shape first."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

__all__ = ["Tensor"]


@dataclasses.dataclass(frozen=True)
class Tensor:
    """A model input or output; unnamed ones are served as ``INPUT_<i>`` / ``OUTPUT_<i>`` (from 1), as in PyTriton.

    >>> Tensor(dtype=np.dtype("float32"), shape=(-1,)).dtype
    <class 'numpy.float32'>
    """

    shape: tuple[int, ...]
    dtype: Any
    name: str | None = None
    optional: bool | None = False

    def __post_init__(self) -> None:
        if isinstance(self.dtype, np.dtype):
            object.__setattr__(self, "dtype", self.dtype.type)
