"""`make docs-charts`: the README's pictures of every notebook's charts, drawn from real runs.

A sandbox with three seeded instances; three nightly flow-associations runs with a change in
between (the third stopped at a deadline), an onboarding, a migration with associate-flows; then
each notebook executed with ``CONNECT_BULK_FIGURES_DIR`` pointing into ``docs/charts/``.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import boto3
import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).parents[1]
CLI = [sys.executable, "-m", "connect_bulk.pipeline"]
ENV = os.environ | {"AWS_ACCESS_KEY_ID": "docs", "AWS_SECRET_ACCESS_KEY": "docs",
                    "AWS_CONFIG_FILE": os.devnull, "AWS_SHARED_CREDENTIALS_FILE": os.devnull}


def main(out: Path) -> None:
    work = Path(tempfile.mkdtemp(prefix="connect-bulk-docs-"))
    sandbox = subprocess.Popen(
        [*CLI, "sandbox", "--port", "0", "--seed-instances", "3",
         "--seed-numbers-per-instance", "120", "--seed-flows-per-instance", "4",
         "--seed-random", "2026"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        text=True, env=ENV)
    try:
        assert sandbox.stdout is not None
        url = sandbox.stdout.readline().split()[1]
        runs = _make_runs(url, work)
        for name, env in (
            ("flow-associations-report", {"CONNECT_BULK_RUN_DIR": str(runs / "nightly-2")}),
            ("campaign-onboarding-report", {"CONNECT_BULK_RUN_DIR": str(runs / "onboarding")}),
            ("associate-flows-report", {"CONNECT_BULK_RUN_DIR": str(runs / "migration")}),
            ("nightly-drift", {"CONNECT_BULK_RUNS": str(runs)}),
        ):
            os.environ.update(env | {"CONNECT_BULK_FIGURES_DIR": str(out / name)})
            notebook = nbformat.read(ROOT / "notebooks" / f"{name}.ipynb", as_version=4)
            NotebookClient(notebook, timeout=300, kernel_name="python3",
                           resources={"metadata": {"path": str(work)}}).execute()
            for said in (out / name).glob("*.json"):
                said.unlink()  # what each figure says is for the tests; the README shows PNGs
            print(f"{out / name}: {', '.join(sorted(p.name for p in (out / name).glob('*.png')))}")
    finally:
        sandbox.terminate()
        sandbox.wait(timeout=30)


def _make_runs(url: str, work: Path) -> Path:
    connect = boto3.client("connect", endpoint_url=url, region_name="us-east-1",
                           aws_access_key_id="docs", aws_secret_access_key="docs")
    instances = connect.list_instances()["InstanceSummaryList"]
    numbers = {i["Arn"]: connect.list_phone_numbers_v2(
        InstanceId=i["Id"], MaxResults=1000)["ListPhoneNumbersSummaryList"] for i in instances}
    runs = work / "runs"

    def run(job: str, rows: list[list[str]], header: list[str], run_id: str, *extra: str) -> None:
        path = work / f"{run_id}.csv"
        with path.open("w", newline="") as handle:
            csv.writer(handle).writerows([header, *rows])
        subprocess.run([*CLI, "run", job, str(path), "--endpoint-url", url, "--out", str(runs),
                        "--run-id", run_id, "--region", "us-east-1", "--yes", "--rate", "20",
                        *extra], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                       check=False)

    every = [[arn, n["PhoneNumberId"]] for arn, listed in numbers.items() for n in listed]
    run("flow-associations", every, ["instance_id", "phone_number"], "nightly-1")
    for arn, listed in numbers.items():
        for number in listed[:8]:  # a change between two nights
            connect.disassociate_phone_number_contact_flow(
                PhoneNumberId=number["PhoneNumberId"], InstanceId=arn.rsplit("/", 1)[1])
    run("flow-associations", every, ["instance_id", "phone_number"], "nightly-2")
    run("flow-associations", every, ["instance_id", "phone_number"], "nightly-3", "--rate", "1",
        "--burst", "1", "--deadline", "3s")
    run("campaign-onboarding", [[arn] for arn in numbers] + [["not-an-instance"]],
        ["instance_id"], "onboarding", "--no-encryption")
    first = next(iter(numbers))
    run("associate-flows", [[first, n["PhoneNumber"], "Support"] for n in numbers[first][:40]],
        ["instance_id", "phone_number", "flow"], "migration")
    return runs


if __name__ == "__main__":
    main((Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs" / "charts").resolve())
