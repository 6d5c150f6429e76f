"""``connect-bulk demo``: a sandbox in this process, a seeded world, a realistic messy input, and
the jobs run against it, as a user would run them against AWS."""

from __future__ import annotations

import csv
import os
import random
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import boto3

from .seed import SeedRequest, seed_world
from .server import SandboxServer

DEMO_REGION = "us-east-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "sandbox", "AWS_SECRET_ACCESS_KEY": "sandbox"}


def _numbers(connect: Any, instance_id: str) -> list[dict[str, Any]]:
    numbers: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"InstanceId": instance_id, "MaxResults": 1000}
    while True:
        page = connect.list_phone_numbers_v2(**kwargs)
        numbers += page["ListPhoneNumbersSummaryList"]
        if not page.get("NextToken"):
            return numbers
        kwargs["NextToken"] = page["NextToken"]


def flow_association_rows(
    connect: Any, instances: list[dict[str, Any]], *, seed: int, messy: bool
) -> list[dict[str, str]]:
    """Input rows for every seeded number: IDs and ARNs mixed; with ``messy``, also duplicates,
    bad rows, and numbers listed under an instance they are not claimed in."""
    rng = random.Random(seed)
    claimed = {i["id"]: _numbers(connect, i["id"]) for i in instances}
    rows = [
        {
            "Instance": rng.choice([instance["id"], instance["arn"]]),
            "Phone Number": rng.choice([number["PhoneNumberId"], number["PhoneNumberArn"]]),
        }
        for instance in instances
        for number in claimed[instance["id"]]
    ]
    if messy and rows:
        rows += [dict(rng.choice(rows)) for _ in range(max(1, len(rows) // 100))]
        first, second = instances[0], instances[-1]
        if first is not second:
            for number in claimed[second["id"]][:3]:
                rows.append({"Instance": first["id"], "Phone Number": number["PhoneNumberId"]})
        rows += [
            {"Instance": "not-an-instance", "Phone Number": rows[0]["Phone Number"]},
            {"Instance": first["arn"], "Phone Number": ""},
            {"Instance": first["id"], "Phone Number": "not-a-number"},
            # The first seeded number, as people write it: resolved through the listing.
            {"Instance": first["id"], "Phone Number": "+1 (555) 010-0000"},
        ]
        rng.shuffle(rows)
    return rows


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=["Instance", "Phone Number"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_demo(*, rows: int, out: str, progress: bool, log_format: str, echo: Any) -> int:
    from ..aws import AwsSettings
    from ..record import RunOptions
    from ..rundir import utc_now

    instances = 3
    os.environ.update(CREDENTIALS)  # the sandbox takes any credentials; never send real ones
    # A sandbox of its own, so the rates its runs learn are of no use to any other run.
    with SandboxServer() as sandbox, tempfile.TemporaryDirectory() as state_dir:
        echo(f"sandbox listening on {sandbox.url}")
        world = seed_world(SeedRequest(
            region=DEMO_REGION, instances=instances,
            numbers_per_instance=max(1, rows // instances), flows_per_instance=4,
            associated_fraction=0.8, seed=2026,
        ))
        echo(f"seeded {len(world['instances'])} instances with {world['numbers']} claimed "
             f"numbers, {world['associated']} of them associated with a flow")
        stamp = utc_now().strftime("%Y%m%dT%H%M%SZ")
        options = RunOptions(
            out=out, run_id=f"demo-flow-associations-{stamp}",
            aws=AwsSettings(endpoint_url=sandbox.url, region=DEMO_REGION, rate=10.0,
                            burst=5.0, concurrency=8, state_dir=state_dir),
            log_format=log_format, progress=progress, yes=True,
        )
        demo = _Demo(sandbox.url, world["instances"], options, stamp, echo)
        codes = [demo.flow_associations(), demo.campaign_onboarding(), *demo.migration()]
        demo.say_where()
    return max(codes)


class _Demo:
    """The demo's steps, each a run of a job against the sandbox, as a user would make it."""

    def __init__(self, url: str, instances: list[dict[str, Any]], options: Any, stamp: str,
                 echo: Any) -> None:
        self.instances, self.options, self.stamp, self.echo = instances, options, stamp, echo
        self.clients = {service: boto3.client(
            service, endpoint_url=url, region_name=DEMO_REGION,
            aws_access_key_id="sandbox", aws_secret_access_key="sandbox",
        ) for service in ("connect", "kms")}
        self.run_dirs: list[Path] = []

    def _start(self, job: str, path: Path, job_options: dict[str, Any], suffix: str = "") -> int:
        from ..runs import start

        options = replace(self.options, run_id=f"demo-{job}-{self.stamp}{suffix}")
        self.run_dirs.append(Path(options.out) / str(options.run_id))
        return start(job, path, job_options, options)

    def flow_associations(self) -> int:
        path = write_csv(Path("data/demo/flow-associations.csv"), flow_association_rows(
            self.clients["connect"], self.instances, seed=2026, messy=True))
        self.echo(f"wrote {path} (IDs, ARNs and an E.164 number mixed, some duplicates, a few "
                  "bad rows, a few numbers listed under the wrong instance)")
        self.echo(f"running flow-associations at --rate {self.options.aws.rate} against the "
                  "sandbox")
        return self._start("flow-associations", path, {})

    def campaign_onboarding(self) -> int:
        key_arn = self.clients["kms"].create_key(
            Description="connect-bulk demo")["KeyMetadata"]["Arn"]
        path = write_onboarding_csv(Path("data/demo/campaign-onboarding.csv"), self.instances,
                                    key_arn)
        self.echo("")
        self.echo(f"wrote {path} (one instance with its own key, one with the default key, one "
                  "with a key KMS does not have, one bad row)")
        self.echo("running campaign-onboarding --wait against the sandbox")
        return self._start("campaign-onboarding", path, {"kms_key_arn": key_arn, "wait": True})

    def migration(self) -> list[int]:
        """Twenty numbers of the first instance re-pointed at "Support", by E.164 and flow name;
        a dry run first, then the run, then its rollback."""
        import polars as pl

        from ...jobs.associate_flows import rollback_run

        instance = self.instances[0]
        numbers = _numbers(self.clients["connect"], instance["id"])[:20]
        path = Path("data/demo/associate-flows.csv")
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(["Instance", "Phone Number", "Flow Name"])
            writer.writerows([instance["arn"], n["PhoneNumber"], "Support"] for n in numbers)
        self.echo("")
        self.echo(f"wrote {path} (a migration: {len(numbers)} numbers to the flow \"Support\", by "
                  "E.164 and flow name)")
        self.echo("running associate-flows --dry-run, then associate-flows, then its rollback")
        codes = [self._start("associate-flows", path, {"dry_run": True}, "-dry-run"),
                 self._start("associate-flows", path, {})]
        migrated = self.run_dirs[-1]
        results = pl.read_parquet(migrated / "results.parquet")
        moves = results.group_by("flow_name_before", "flow_name", "outcome").len().sort("len")
        self.echo("what changed (flow before -> after):")
        for row in moves.iter_rows(named=True):
            self.echo(f"  {row['flow_name_before'] or 'no flow'} -> {row['flow_name']}: "
                      f"{row['len']} numbers {row['outcome']}")
        codes.append(rollback_run(migrated, yes=True, dry_run=False, confirm=None,
                                  log_format=self.options.log_format,
                                  progress=self.options.progress))
        self.run_dirs.append(migrated.with_name(migrated.name + "-rollback"))
        restored = pl.read_parquet(self.run_dirs[-1] / "results.parquet")
        self.echo(f"rolled back: {restored.height} numbers on the flow they had before "
                  f"(connect-bulk rollback {migrated})")
        return codes

    def say_where(self) -> None:
        self.echo("")
        for run_dir in self.run_dirs:
            self.echo(f"outputs in {run_dir}/: results.parquet, failures.parquet, "
                      "rejects.parquet, summary.json, events.jsonl")
            self.echo(f"  connect-bulk status {run_dir}")
            self.echo(f"  connect-bulk show {run_dir} failures")
        self.echo("")
        # Commands that work from here: a clone has notebooks/ and .venv/; an install copies
        # the notebooks out first.
        venv = ".venv/bin/" if Path(".venv/bin/python").exists() else ""
        self.echo("open the run reports (each reads the newest run of its job under data/runs):")
        if not Path("notebooks").is_dir():
            self.echo(f"  {venv}connect-bulk notebooks notebooks")
        extra = "-e '.[notebooks]'" if Path("pyproject.toml").is_file() else \
            "'connect-bulk[notebooks]'"  # a clone installs itself; an install its extra
        self.echo(f"  {venv}pip install {extra} && {venv}jupyter lab notebooks/")
        self.echo(f"  or one run: CONNECT_BULK_RUN_DIR={self.run_dirs[0]} {venv}jupyter lab "
                  "notebooks/flow-associations-report.ipynb")


def write_onboarding_csv(path: Path, instances: list[dict[str, Any]], key_arn: str) -> Path:
    """One instance with its own key, the next with none (the default key), the rest with a
    key KMS does not have; and one bad row."""
    missing = key_arn.rsplit("/", 1)[0] + "/00000000-0000-4000-8000-000000000000"
    rows = [[instances[0]["arn"], key_arn]]
    rows += [[instance["id"], ""] for instance in instances[1:2]]
    rows += [[instance["id"], missing] for instance in instances[2:]]
    rows.append(["not-an-instance", key_arn])
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["instance_id", "kms_key_arn"])
        writer.writerows(rows)
    return path


# The world the committed samples in data/ belong to; the README starts it with
#   connect-bulk sandbox --seed-instances 2 --seed-numbers-per-instance 50 --seed-random 7
SAMPLE_WORLD = SeedRequest(region=DEMO_REGION, instances=2, numbers_per_instance=50,
                           flows_per_instance=3, associated_fraction=0.8, seed=7)


def write_samples(data_dir: Path) -> list[Path]:
    """(Re)write ``data/sample-flow-associations.{csv,parquet}`` from the sample world."""
    import polars as pl
    from moto.core.base_backend import BackendDict

    with SandboxServer() as sandbox:
        BackendDict.reset()
        world = seed_world(SAMPLE_WORLD)
        connect = boto3.client(
            "connect", endpoint_url=sandbox.url, region_name=DEMO_REGION,
            aws_access_key_id="sandbox", aws_secret_access_key="sandbox",
        )
        messy = flow_association_rows(connect, world["instances"], seed=7, messy=True)
        clean = flow_association_rows(connect, world["instances"], seed=7, messy=False)
    csv_path = write_csv(data_dir / "sample-flow-associations.csv", messy)
    parquet_path = data_dir / "sample-flow-associations.parquet"
    pl.DataFrame(clean).rename(
        {"Instance": "instance_id", "Phone Number": "phone_number"}
    ).write_parquet(parquet_path)
    return [csv_path, parquet_path]


if __name__ == "__main__":
    for written in write_samples(Path("data")):
        print(f"wrote {written}")  # noqa: T201
