"""The local Amazon Connect sandbox: moto's server extended with the Connect and Outbound
Campaigns operations the jobs use, fault injection, counters and bulk seeding.

This subpackage is the emulator, not the engine: it is the one part of ``pipeline/`` that
names AWS operations.
"""

from .faults import Faults, Quota
from .seed import SeedRequest
from .server import SandboxServer

__all__ = ["Faults", "Quota", "SandboxServer", "SeedRequest"]
