"""vprlab: an experiment framework for Visual Place Recognition built around BoQ."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["__version__", "load_pretrained"]

# ${vprlab.job_name:} in sweep configs (W&B run names) resolves wherever vprlab is imported.
from vprlab.utils.resolvers import register_resolvers  # noqa: E402

register_resolvers()


def __getattr__(name: str) -> Any:
    # Lazy, so that `import vprlab` does not import torch.
    if name == "load_pretrained":
        from vprlab.pretrained import load_pretrained

        return load_pretrained
    raise AttributeError(f"module 'vprlab' has no attribute {name!r}")
