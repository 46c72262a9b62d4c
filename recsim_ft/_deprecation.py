"""Old import paths of moved or renamed names keep working for one release, with a
DeprecationWarning that says where the name lives now (see CHANGELOG.md)."""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Callable
from typing import Any


def moved_names(old_module: str, new_paths: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` serving each old name of ``new_paths`` (old name -> the dotted
    path it has now) from there, with a DeprecationWarning; other missing names raise
    AttributeError as usual.

    >>> import warnings
    >>> getattr_ = moved_names("old", {"OldPath": "pathlib.Path"})
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     getattr_("OldPath").__name__, str(caught[0].message)
    ('Path', 'old.OldPath is deprecated: use pathlib.Path')
    """

    def __getattr__(name: str) -> Any:
        if name not in new_paths:
            raise AttributeError(f"module {old_module!r} has no attribute {name!r}")
        module, _, new_name = new_paths[name].rpartition(".")
        warnings.warn(
            f"{old_module}.{name} is deprecated: use {new_paths[name]}",
            DeprecationWarning,
            stacklevel=2,
        )
        return getattr(importlib.import_module(module), new_name)

    return __getattr__
