"""Instances in another account, through --role-arn-template, and plan's calls per account and
region."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.world import numbers_in, read, write_csv
from tests.conftest import Sandbox, run_cli

OTHER = "111111111111"
TEMPLATE = "arn:aws:iam::{account}:role/ConnectBulk"


def test_two_accounts_through_an_assumed_role(sandbox: Sandbox, tmp_path: Path) -> None:
    rows = numbers_in(sandbox, "123456789012", "us-east-1", 1) + numbers_in(
        sandbox, OTHER, "eu-west-2", 2)
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"], rows)

    planned = json.loads(run_cli("plan", "flow-associations", str(path), "--json").stdout)
    assert sorted((s["account_id"], s["region"], s["batches"]) for s in planned["scopes"]) == [
        (OTHER, "eu-west-2", 2), ("123456789012", "us-east-1", 2)]

    result = run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                     "--out", str(tmp_path / "out"), "--run-id", "a", "--rate", "50",
                     "--role-arn-template", TEMPLATE)
    assert result.returncode == 0, result.stderr[-3000:]
    results = read(tmp_path / "out" / "a" / "results.parquet")
    assert results.group_by("account_id", "region").len().sort("account_id").rows() == [
        (OTHER, "eu-west-2", 150), ("123456789012", "us-east-1", 150)]
    calls = sandbox.stats()["calls"]
    assert calls["AssumeRole"] == 1  # once for the other account, none for the caller's own
    assert calls["BatchGetFlowAssociation"] == 4


def test_a_role_template_without_account_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"], [["a", "b"]])
    result = run_cli("run", "flow-associations", str(path), "--role-arn-template",
                     "arn:aws:iam::1:role/X", "--log-format", "text")
    assert result.returncode == 2
    assert "{account}" in result.stderr
