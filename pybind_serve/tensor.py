"""`Tensor`: the spec of one model input or output."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .dtypes import normalize_dtype, to_config_type, to_datatype
from .errors import ConfigurationError

__all__ = ["Tensor"]


@dataclass(frozen=True)
class Tensor:
    """One input or output of a model.

    ``shape`` excludes the batch dimension when the model batches (`ModelConfig`'s default: requests then carry
    one more dimension first, their number of rows, and the model's metadata shows it as ``-1``); ``-1`` marks
    a dimension of any size.

    ``dtype`` is any numpy dtype KServe can carry (``np.float32``, ``"int64"``, ...), or a KServe datatype name
    (``"FP32"``, ``"INT64"``, ``"BYTES"``, ...). ``bytes``, ``str``, ``object`` and ``"BYTES"`` all mean
    ``BYTES``: variable-length byte strings, which the function receives as a numpy ``object`` array of `bytes`
    (``str`` included: decode them yourself) and may return as ``bytes`` or ``str`` elements (a `str` is sent
    UTF-8 encoded). An ``optional`` input may be left out of a request.

    >>> Tensor("image", np.uint8, (224, 224, 3)).datatype
    'UINT8'
    >>> Tensor("text", bytes, (-1,)).config_type
    'TYPE_STRING'
    >>> Tensor("text", "BYTES", (1,)) == Tensor("text", str, (1,))
    True
    """

    name: str
    dtype: Any
    shape: tuple[int, ...] = field(default=(-1,))
    optional: bool = False

    def __post_init__(self) -> None:
        problems: list[str] = []
        if not isinstance(self.name, str) or not self.name:
            problems.append(f"name must be a non-empty string, got {self.name!r}")
        try:
            object.__setattr__(self, "dtype", normalize_dtype(self.dtype))
        except ConfigurationError as exc:
            problems.append(str(exc))
        problems.extend(self._normalize_shape())
        if not isinstance(self.optional, bool):
            problems.append(f"optional must be a bool, got {self.optional!r}")
        if problems:
            raise ConfigurationError.collect(f"Tensor {self.name!r}", problems)

    def _normalize_shape(self) -> list[str]:
        shape = self.shape
        if isinstance(shape, (int, np.integer)) and not isinstance(shape, bool):
            shape = (int(shape),)
        if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
            return [f"shape must be a sequence of ints, got {self.shape!r}"]
        bad = [
            d for d in shape if not isinstance(d, (int, np.integer)) or isinstance(d, bool) or not (d == -1 or d > 0)
        ]
        if bad:
            return [f"shape dims must be positive ints or -1 (any size), got {list(shape)}"]
        object.__setattr__(self, "shape", tuple(int(d) for d in shape))
        return []

    @property
    def datatype(self) -> str:
        """The KServe v2 datatype name, e.g. ``FP32``."""
        return to_datatype(self.dtype)

    @property
    def config_type(self) -> str:
        """The Triton model-config type name, e.g. ``TYPE_FP32``."""
        return to_config_type(self.dtype)

    def accepts(self, shape: Sequence[int]) -> bool:
        """Whether a concrete shape (batch dim excluded) fits this spec.

        >>> Tensor("x", np.float32, (-1, 3)).accepts((5, 3)), Tensor("x", np.float32, (3,)).accepts((4,))
        (True, False)
        """
        return len(shape) == len(self.shape) and all(s == d or s == -1 for d, s in zip(shape, self.shape, strict=True))
