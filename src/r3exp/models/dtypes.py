"""The weights' dtypes a config names (``model.dtype``, ``gguf.dtype``): shared by the loaders
(:mod:`r3exp.models.loading`), the GGUF conversion and the random-weight build, which import it and not each other."""

from __future__ import annotations

import torch

from r3exp.errors import ModelUnavailable

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype named ``name`` (a key of :data:`DTYPES`); any other name fails in one line."""
    try:
        return DTYPES[name]
    except KeyError:
        raise ModelUnavailable(f"model.dtype={name!r} is not one of {sorted(DTYPES)}") from None
