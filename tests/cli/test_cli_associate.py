"""`connect-bulk run associate-flows` and `connect-bulk rollback`, through the real CLI against
the sandbox: the world is read back through ListFlowAssociations before and after."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from tests.cli.world import FLOW, World, build_world, read, write_csv
from tests.conftest import Sandbox, run_cli

ASSOCIATE = "AssociatePhoneNumberContactFlow"


def _state(sandbox: Sandbox, world: World) -> dict[str, str | None]:
    """Every number of the world -> the flow ARN it points at (None: no flow)."""
    connect = sandbox.client("connect")
    found: dict[str, str] = {}
    for instance in world.instances:
        pages = connect.get_paginator("list_flow_associations").paginate(
            InstanceId=instance["Id"], ResourceType="VOICE_PHONE_NUMBER")
        for page in pages:
            found |= {a["ResourceId"]: a["FlowId"] for a in page["FlowAssociationSummaryList"]}
    return {n.arn: found.get(n.arn) for n in world.numbers}


def _new_flow(sandbox: Sandbox, instance: dict[str, str], name: str) -> dict[str, str]:
    made = sandbox.client("connect").create_contact_flow(
        InstanceId=instance["Id"], Name=name, Type="CONTACT_FLOW", Content=FLOW)
    return {"id": made["ContactFlowId"], "arn": made["ContactFlowArn"]}


def _run(sandbox: Sandbox, path: Path, out: Path, run_id: str, *extra: str,
         **env: str) -> tuple[int, dict[str, Any], Path]:
    result = run_cli("run", "associate-flows", str(path), "--endpoint-url", sandbox.url,
                     "--region", "us-east-1", "--out", str(out), "--run-id", run_id, "--yes",
                     "--rate", "50", *extra,
                     **env)
    assert "Traceback" not in result.stderr, result.stderr
    run_dir = out / run_id
    summary = run_dir / "summary.json"
    return result.returncode, json.loads(summary.read_text()) if summary.exists() else {}, \
        run_dir


@pytest.fixture
def migration(sandbox: Sandbox, tmp_path: Path) -> tuple[World, Path, dict[str, str]]:
    """Two instances of 8 numbers; each gets a flow "New IVR". Instance 0 is mapped by E.164
    and flow name, instance 1 by number ID and flow ARN; numbers 1 and 2 of each keep (or get)
    the flow they had (by its name or ARN)."""
    world = build_world(sandbox, instances=2, numbers_per_instance=8)
    rows = []
    target: dict[str, str] = {}
    for index, instance in enumerate(world.instances):
        new = _new_flow(sandbox, instance, "New IVR")
        for position, number in enumerate(world.of(instance)):
            keep = position in (1, 2)
            flow_arn = number.flow_arn if keep and number.flow_arn else new["arn"]
            if index == 0:
                # the world's flows alternate: "Flow 1" at odd positions, "Flow 0" at even
                flow = f"Flow {position % 2}" if keep and number.flow_arn else "New IVR"
                rows.append([instance["Arn"], number.e164, flow])
            else:
                rows.append([instance["Id"], number.id, flow_arn])
            target[number.arn] = flow_arn
    path = write_csv(tmp_path / "map.csv", ["Instance", "Phone Number", "Contact Flow"], rows)
    return world, path, target


def test_dry_run_predicts_the_run_and_rollback_restores_the_world(
    sandbox: Sandbox, tmp_path: Path, migration: tuple[World, Path, dict[str, str]]
) -> None:
    world, path, target = migration
    before = _state(sandbox, world)
    built = sandbox.stats()["calls"][ASSOCIATE]  # the world's own associations
    code, dry, dry_dir = _run(sandbox, path, tmp_path / "out", "dry", "--dry-run")
    assert code == 0, dry
    assert _state(sandbox, world) == before  # nothing changed
    assert sandbox.stats()["calls"][ASSOCIATE] == built
    predicted = {r["phone_number_arn"]: r["outcome"]
                 for r in read(dry_dir / "results.parquet").iter_rows(named=True)}

    code, summary, run_dir = _run(sandbox, path, tmp_path / "out", "migrate")
    assert code == 0, summary
    after = _state(sandbox, world)
    assert after == target
    results = read(run_dir / "results.parquet")
    assert results.height == 16
    for row in results.iter_rows(named=True):
        assert row["flow_id_before"] == before[row["phone_number_arn"]]
        assert row["flow_id"] == target[row["phone_number_arn"]]
        assert row["verified"] is True
        expected = "unchanged" if before[row["phone_number_arn"]] == row["flow_id"] \
            else "associated"
        assert row["outcome"] == expected
        assert predicted[row["phone_number_arn"]] == (
            "unchanged" if expected == "unchanged" else "would_associate")
    changed = results.filter(pl.col("outcome") == "associated").height
    assert sandbox.stats()["calls"][ASSOCIATE] == built + changed
    assert set(results["flow_name"]) == {"New IVR", "Flow 0", "Flow 1"}
    assert results.filter(pl.col("phone_number").is_not_null()).height >= 8  # the E.164 ones

    plan = read(run_dir / "rollback.parquet")
    assert plan.height == changed
    assert set(plan.columns) == {"instance_id", "phone_number", "flow"}
    # diff reads a migration as it reads flow-associations runs: what each number points at.
    diffed = run_cli("diff", str(dry_dir), str(run_dir), "--json")
    assert diffed.returncode == 2  # a dry run's flows were never applied: not comparable
    calls = sandbox.stats()["calls"][ASSOCIATE]
    preview = run_cli("rollback", str(run_dir), "--dry-run")
    assert preview.returncode == 0, preview.stderr
    assert _state(sandbox, world) == target  # the preview changed nothing
    assert sandbox.stats()["calls"][ASSOCIATE] == calls
    predicted_back = read(tmp_path / "out" / "migrate-rollback-dry-run" / "results.parquet")
    assert set(predicted_back["outcome"]) <= {"would_associate", "would_disassociate"}
    assert predicted_back.height == changed
    rolled = run_cli("rollback", str(run_dir), "--yes")
    assert rolled.returncode == 0, rolled.stderr
    assert _state(sandbox, world) == before  # exactly: disassociated where there was none
    back = run_cli("diff", str(run_dir), str(tmp_path / "out" / "migrate-rollback"), "--json")
    assert back.returncode == 0, back.stderr
    undone = json.loads(back.stdout)
    assert undone["changed"] + undone["removed"] == changed
    assert undone["not_compared"] == 16 - changed  # the unchanged ones had no rollback
    again = json.loads((tmp_path / "out" / "migrate-rollback" / "summary.json").read_text())
    assert (again["items_total"], again["items_succeeded"]) == (changed, changed)


@pytest.mark.parametrize("kill_at", ["first-call:4", "first-call:7", "wal-synced:1"])
def test_a_kill_mid_migration_resumes_with_the_state_before_and_no_extra_change(
    sandbox: Sandbox, tmp_path: Path, migration: tuple[World, Path, dict[str, str]],
    kill_at: str,
) -> None:
    world, path, target = migration
    before = _state(sandbox, world)
    built = sandbox.stats()["calls"][ASSOCIATE]
    changes = sum(1 for arn, flow in target.items() if before[arn] != flow)
    code, _, run_dir = _run(sandbox, path, tmp_path / "out", "m", "--concurrency", "1",
                            CONNECT_BULK_CRASH_AT=kill_at)
    assert code == -9
    resumed = run_cli("resume", str(run_dir))
    assert resumed.returncode == 0, resumed.stderr
    assert _state(sandbox, world) == target
    results = read(run_dir / "results.parquet")
    assert results.height == 16
    for row in results.iter_rows(named=True):
        assert row["flow_id_before"] == before[row["phone_number_arn"]]  # never the run's own
    assert results.filter(pl.col("outcome") == "associated").height == changes
    # At most one call was in flight at the kill (--concurrency 1).
    assert changes <= sandbox.stats()["calls"][ASSOCIATE] - built <= changes + 1
    assert read(run_dir / "rollback.parquet").height == changes


def test_unknown_and_ambiguous_names_and_conflicting_rows(sandbox: Sandbox,
                                                          tmp_path: Path) -> None:
    world = build_world(sandbox, instances=1, numbers_per_instance=5)
    instance = world.instances[0]
    # A queue flow and a contact flow may share a name: the name alone cannot tell them apart.
    sandbox.client("connect").create_contact_flow(
        InstanceId=instance["Id"], Name="Flow 0", Type="CUSTOMER_QUEUE", Content=FLOW)
    n = world.of(instance)
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number", "flow"], [
        [instance["Arn"], n[0].id, "No such flow"],
        [instance["Arn"], n[1].id, "Flow 0"],
        [instance["Arn"], n[2].id, "Flow 1"],
        [instance["Arn"], n[2].id, "Flow 0"],   # the same number, another flow
        [instance["Arn"], n[3].id, "Flow 1"],
        [instance["Arn"], n[4].id, ""],         # empty without --allow-disassociate
    ])
    code, summary, run_dir = _run(sandbox, path, tmp_path / "out", "r")
    assert code == 1
    failures = {r["item_key"]: r for r in read(run_dir / "failures.parquet").iter_rows(
        named=True)}
    assert failures[n[0].id]["error_code"] == "FlowNotFound"
    assert failures[n[1].id]["error_code"] == "FlowNameAmbiguous"
    assert failures[n[1].id]["retryable"] is False
    rejects = {r["input_row"]: r["reason"] for r in read(run_dir / "rejects.parquet").iter_rows(
        named=True)}
    assert set(rejects) == {3, 4, 6}
    assert "rows 3, 4" in rejects[3] and "rows 3, 4" in rejects[4]
    assert "--allow-disassociate" in rejects[6]
    assert (summary["items_succeeded"], summary["rows_rejected"]) == (1, 3)
    # Number 3 already pointed at "Flow 1": found so, verified, and not called.
    (done,) = read(run_dir / "results.parquet").iter_rows(named=True)
    assert (done["phone_number_id"], done["flow_name"], done["outcome"], done["verified"]) == (
        n[3].id, "Flow 1", "unchanged", True)
    assert done["flow_id_before"] == done["flow_id"] == n[3].flow_arn
    assert summary["calls"].get(ASSOCIATE) is None


def test_a_quota_below_the_rate_still_puts_every_number_on_its_target(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    world = build_world(sandbox, instances=1, numbers_per_instance=30, associate_every=30)
    instance = world.instances[0]
    new = _new_flow(sandbox, instance, "Overflow")
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number", "flow_arn"],
                     [[instance["Arn"], n.id, new["arn"]] for n in world.numbers])
    sandbox.faults(quota=[f"{ASSOCIATE}=5/2"])
    code, summary, _ = _run(sandbox, path, tmp_path / "out", "q", "--rate", "50",
                            "--burst", "20")
    assert code == 0, summary
    assert set(_state(sandbox, world).values()) == {new["arn"]}
    calls = summary["calls"][ASSOCIATE]
    assert calls["made"] == 30 + calls["throttled"]  # every throttled call tried again
    # A migration says which phase its batches are in (the progress bar shows it too).
    events = [json.loads(line) for line in
              (tmp_path / "out" / "q" / "events.jsonl").read_text().splitlines()]
    assert "1 batches: 1 changing" in [e.get("phase") for e in events]


def test_plan_says_what_changes_cost_at_the_default_quota(tmp_path: Path) -> None:
    instance = "11111111-1111-4111-8111-111111111111"
    rows = [[instance, f"00000000-0000-4000-8000-{i:012d}", "New IVR"] for i in range(10_000)]
    path = write_csv(tmp_path / "big.csv", ["instance_id", "phone_number", "flow"], rows)
    planned = run_cli("plan", "associate-flows", str(path), "--region", "us-east-1", "--json")
    assert planned.returncode == 0, planned.stderr
    report = json.loads(planned.stdout)
    assert report["calls"] == {"BatchGetFlowAssociation": 200, ASSOCIATE: 10_000,
                               "ListContactFlows": 1, "DescribeInstance": 1}
    assert 82 * 60 <= report["estimated_s"] <= 84 * 60  # 10,000 changes at 2 a second
    text = run_cli("plan", "associate-flows", str(path), "--region", "us-east-1").stdout
    assert f"calls {ASSOCIATE}: 10000" in text
