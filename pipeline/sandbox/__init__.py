"""The local Amazon Connect sandbox: moto's server extended with the Connect and Outbound
Campaigns operations the jobs use, fault injection, counters and bulk seeding.

This subpackage is the emulator, not the engine: it is the one part of ``pipeline/`` that
names AWS operations. It needs the ``sandbox`` extra (moto); its names load on first use, so
that the command line imports without it (``commands`` says so in one line).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"Faults": ".faults", "Quota": ".faults", "SeedRequest": ".seed",
            "SandboxServer": ".server"}
__all__ = ["Faults", "Quota", "SandboxServer", "SeedRequest"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(name)
    return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
