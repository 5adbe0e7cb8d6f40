"""PEP 562 lazy exports: a package names its public objects without importing torch until one is used."""
from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """`__getattr__` and `__dir__` for `package`, importing `exports[name]` (a module) on first use of `name`."""

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(importlib.import_module(package), name, value)  # the next lookup is a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
