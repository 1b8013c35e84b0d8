"""The encode pipeline: train the GAN and the real-data classifier, invert, condense, write the .lds file."""

from __future__ import annotations

import sys
import types
from typing import Any


class _CallableModule(types.ModuleType):
    """This package can be called: ``latentds.encode(...)`` is :func:`latentds.api.encode` (the package and the
    top-level function share the name; calling the package is the function)."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from latentds import api

        return api.encode(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
