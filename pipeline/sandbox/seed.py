"""Bulk seeding: a world of instances, claimed numbers, flows and associations written straight
into the backends, so that 100,000 numbers take seconds instead of 100,000 API calls. The world
is deterministic for a given ``seed``; it is read back through the ordinary AWS API.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass
from typing import Any

from moto.connect.models import connect_backends
from moto.core import DEFAULT_ACCOUNT_ID

from .connect import ConnectSandboxBackend, connect_sandbox_backends

FLOW_CONTENT = '{"Version": "2019-10-30", "StartAction": "end", "Actions": []}'


@dataclass(frozen=True, slots=True, kw_only=True)
class SeedRequest:
    region: str = "us-east-1"
    account_id: str = DEFAULT_ACCOUNT_ID
    instances: int = 1
    numbers_per_instance: int = 100
    flows_per_instance: int = 3
    associated_fraction: float = 0.8
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.instances <= 1000:
            raise ValueError("instances must be between 0 and 1000")
        if not 0 <= self.numbers_per_instance <= 1_000_000:
            raise ValueError("numbers_per_instance must be between 0 and 1000000")
        if self.flows_per_instance < 0:
            raise ValueError("flows_per_instance must be >= 0")
        if not 0.0 <= self.associated_fraction <= 1.0:
            raise ValueError("associated_fraction must be between 0 and 1")
        if self.numbers_per_instance and self.associated_fraction and not self.flows_per_instance:
            raise ValueError("associating numbers needs flows_per_instance >= 1")

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> SeedRequest:
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(body) - known)
        if unknown:
            raise ValueError(f"unknown seed setting(s): {', '.join(unknown)}")
        return cls(**body)


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


# What contact centres call their inbound flows: the seeded world reads like a real one.
FLOW_NAMES = ("Main menu", "Sales", "Support", "Billing", "After hours", "Holiday closure",
              "Emergency message", "Callback", "Spanish menu", "VIP line")


def flow_name(index: int) -> str:
    """The index-th seeded flow's name: readable, and unique within an instance."""
    name = FLOW_NAMES[index % len(FLOW_NAMES)]
    return name if index < len(FLOW_NAMES) else f"{name} {index // len(FLOW_NAMES) + 1}"


def seed_world(request: SeedRequest) -> dict[str, Any]:
    """Create the world ``request`` describes and return what was made."""
    started = time.perf_counter()
    rng = random.Random(f"{request.seed}:{request.account_id}:{request.region}")
    connect = connect_backends[request.account_id][request.region]
    sandbox: ConnectSandboxBackend = connect_sandbox_backends[request.account_id][request.region]
    # Numbers are +1 555 0100 000 upwards, skipping any already claimed in this region.
    next_number = 15550100000 + len(sandbox.claimed)
    made = []
    for index in range(request.instances):
        alias = f"seed-{request.seed}-{len(connect.instances) + 1}"
        created = connect.create_instance(
            identity_management_type="CONNECT_MANAGED",
            inbound_calls_enabled=True,
            outbound_calls_enabled=True,
            instance_alias=alias,
        )
        instance = connect.instances.pop(created["Id"])
        # Deterministic IDs, so that a seeded demo is the same world every time.
        instance.id = _uuid(rng)
        instance.arn = (
            f"arn:aws:connect:{request.region}:{request.account_id}:instance/{instance.id}"
        )
        connect.instances[instance.id] = instance
        flows = [
            sandbox.create_contact_flow(
                instance_id=instance.id,
                name=flow_name(flow),
                flow_type="CONTACT_FLOW",
                content=FLOW_CONTENT,
                flow_id=_uuid(rng),
            )
            for flow in range(request.flows_per_instance)
        ]
        associated = 0
        for _ in range(request.numbers_per_instance):
            while f"+{next_number}" in sandbox.claimed:
                next_number += 1
            number = sandbox.claim_phone_number(
                phone_number=f"+{next_number}",
                target_arn=instance.arn,
                instance_id=None,
                number_id=_uuid(rng),
            )
            next_number += 1
            if flows and rng.random() < request.associated_fraction:
                number.flow_arn = rng.choice(flows).arn
                associated += 1
        made.append({
            "index": index,
            "id": instance.id,
            "arn": instance.arn,
            "alias": alias,
            "numbers": request.numbers_per_instance,
            "flows": len(flows),
            "associated": associated,
        })
    return {
        "account_id": request.account_id,
        "region": request.region,
        "instances": made,
        "numbers": sum(i["numbers"] for i in made),
        "associated": sum(i["associated"] for i in made),
        "seconds": round(time.perf_counter() - started, 3),
    }
