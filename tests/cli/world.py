"""A small, fully known Amazon Connect world, built through the API of the sandbox."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.conftest import Sandbox

FLOW = '{"Version": "2019-10-30", "StartAction": "end", "Actions": []}'


@dataclass
class Number:
    id: str
    arn: str
    e164: str
    instance_id: str
    flow_arn: str | None


@dataclass
class World:
    region: str
    instances: list[dict[str, str]] = field(default_factory=list)
    numbers: list[Number] = field(default_factory=list)

    def of(self, instance: dict[str, str]) -> list[Number]:
        return [n for n in self.numbers if n.instance_id == instance["Id"]]


def build_world(sandbox: Sandbox, *, instances: int, numbers_per_instance: int,
                region: str = "us-east-1", associate_every: int = 4,
                first_number: int = 15557000000) -> World:
    """Instances with claimed numbers; 3 of every ``associate_every`` numbers get a flow."""
    connect = sandbox.client("connect", region=region)
    world = World(region)
    serial = first_number
    for index in range(instances):
        made = connect.create_instance(IdentityManagementType="CONNECT_MANAGED",
                                       InstanceAlias=f"w{index}", InboundCallsEnabled=True,
                                       OutboundCallsEnabled=True)
        instance = {"Id": made["Id"], "Arn": made["Arn"]}
        world.instances.append(instance)
        flows = [
            connect.create_contact_flow(InstanceId=made["Id"], Name=f"Flow {f}",
                                        Type="CONTACT_FLOW", Content=FLOW)["ContactFlowArn"]
            for f in range(2)
        ]
        for n in range(numbers_per_instance):
            serial += 1
            claimed = connect.claim_phone_number(TargetArn=made["Arn"], PhoneNumber=f"+{serial}")
            flow = flows[n % 2] if n % associate_every else None
            if flow:
                connect.associate_phone_number_contact_flow(
                    PhoneNumberId=claimed["PhoneNumberId"], InstanceId=made["Id"],
                    ContactFlowId=flow.rsplit("/", 1)[1],
                )
            world.numbers.append(Number(claimed["PhoneNumberId"], claimed["PhoneNumberArn"],
                                        f"+{serial}", made["Id"], flow))
    return world


def write_csv(path: Path, header: list[str], rows: list[list[str]], *, bom: bool = False) -> Path:
    with path.open("w", newline="", encoding="utf-8-sig" if bom else "utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read(path: Path) -> Any:
    import polars as pl

    return pl.read_parquet(path)


def seeded_input(sandbox: Sandbox, path: Path, *, instances: int, per_instance: int,
                 seed: int) -> Path:
    """Seed a world in bulk and write every claimed number as an input row (instance ARN, ID)."""
    world = sandbox.seed(instances=instances, numbers_per_instance=per_instance, seed=seed)
    connect = sandbox.client("connect")
    rows = []
    for instance in world["instances"]:
        listed = connect.list_phone_numbers_v2(InstanceId=instance["id"], MaxResults=1000)
        rows += [[instance["arn"], n["PhoneNumberId"]]
                 for n in listed["ListPhoneNumbersSummaryList"]]
    return write_csv(path, ["instance_id", "phone_number"], rows)


def numbers_in(sandbox: Sandbox, account: str, region: str, seed: int, *, instances: int = 1,
               numbers_per_instance: int = 150) -> list[list[str]]:
    """Seed instances of ``account`` and ``region``, and read their numbers back as that
    account (moto's ``x-moto-account-id`` header): input rows (instance ARN, number ID)."""
    world = sandbox.seed(account_id=account, region=region, instances=instances,
                         numbers_per_instance=numbers_per_instance, seed=seed)
    connect = sandbox.client("connect", region=region)
    connect.meta.events.register(
        "before-sign.*.*",
        lambda request, **_: request.headers.__setitem__("x-moto-account-id", account))
    rows = []
    for instance in world["instances"]:
        listed = connect.list_phone_numbers_v2(InstanceId=instance["id"], MaxResults=1000)
        rows += [[instance["arn"], n["PhoneNumberId"]]
                 for n in listed["ListPhoneNumbersSummaryList"]]
    return rows
