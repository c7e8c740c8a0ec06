"""vprlab: an experiment framework for Visual Place Recognition built around BoQ."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_pretrained"]


def __getattr__(name: str) -> Any:
    # Lazy, so that `import vprlab` does not import torch.
    if name == "load_pretrained":
        from vprlab.pretrained import load_pretrained

        return load_pretrained
    raise AttributeError(f"module 'vprlab' has no attribute {name!r}")
