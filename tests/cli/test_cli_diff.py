"""`connect-bulk diff`: what changed between two flow-associations runs."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.world import build_world, read, write_csv
from tests.conftest import Sandbox, run_cli


def _run(sandbox: Sandbox, path: Path, out: Path, run_id: str) -> Path:
    result = run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                     "--region", "us-east-1", "--out", str(out), "--run-id", run_id,
                     "--rate", "50")
    assert result.returncode == 0, result.stderr
    return out / run_id


def test_diff_finds_added_removed_and_repointed_associations(sandbox: Sandbox,
                                                             tmp_path: Path) -> None:
    world = build_world(sandbox, instances=1, numbers_per_instance=8)  # 0 and 4 unassociated
    instance = world.instances[0]
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     [[instance["Arn"], n.id] for n in world.numbers])
    before = _run(sandbox, path, tmp_path / "out", "monday")

    connect = sandbox.client("connect")
    added, removed, repointed = world.numbers[0], world.numbers[1], world.numbers[2]
    other_flow = world.numbers[3].flow_arn  # flows alternate: 2 and 3 use different flows
    assert other_flow and other_flow != repointed.flow_arn
    connect.associate_phone_number_contact_flow(
        PhoneNumberId=added.id, InstanceId=instance["Id"],
        ContactFlowId=other_flow.rsplit("/", 1)[1])
    connect.disassociate_phone_number_contact_flow(PhoneNumberId=removed.id,
                                                   InstanceId=instance["Id"])
    connect.associate_phone_number_contact_flow(
        PhoneNumberId=repointed.id, InstanceId=instance["Id"],
        ContactFlowId=other_flow.rsplit("/", 1)[1])
    after = _run(sandbox, path, tmp_path / "out", "tuesday")

    result = run_cli("diff", str(before), str(after), "--json")
    assert result.returncode == 0, result.stderr
    counts = json.loads(result.stdout)
    assert (counts["added"], counts["removed"], counts["changed"]) == (1, 1, 1)
    changes = {row["phone_number_id"]: row
               for row in read(after / "diff.parquet").iter_rows(named=True)}
    assert set(changes) == {added.id, removed.id, repointed.id}
    assert (changes[added.id]["change"], changes[added.id]["flow_id_before"],
            changes[added.id]["flow_id_after"]) == ("added", None, other_flow)
    assert (changes[removed.id]["change"], changes[removed.id]["flow_id_after"]) == (
        "removed", None)
    assert (changes[repointed.id]["change"], changes[repointed.id]["flow_id_before"],
            changes[repointed.id]["flow_id_after"]) == ("changed", repointed.flow_arn,
                                                        other_flow)
    assert changes[added.id]["phone_number_arn"] == added.arn

    text = run_cli("diff", str(before), str(after), "--out", str(tmp_path / "d.parquet"))
    assert "1 added, 1 removed, 1 changed; 0 not compared" in text.stdout
    assert read(tmp_path / "d.parquet").height == 3
    assert (after / "diff.parquet").stat().st_mode & 0o777 == 0o600


def test_a_partial_run_is_compared_only_where_it_has_results(sandbox: Sandbox,
                                                             tmp_path: Path) -> None:
    world = build_world(sandbox, instances=6, numbers_per_instance=20)
    arns = {i["Arn"].rsplit("/", 1)[1]: i["Arn"] for i in world.instances}
    path = write_csv(tmp_path / "in.csv", ["instance_id", "phone_number"],
                     [[arns[n.instance_id], n.id] for n in world.numbers])
    full = _run(sandbox, path, tmp_path / "out", "full")
    stopped = run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                      "--out", str(tmp_path / "out"), "--run-id", "partial", "--rate", "1",
                      "--burst", "1", "--concurrency", "1", "--deadline", "2s")
    assert stopped.returncode == 4
    partial = tmp_path / "out" / "partial"
    answered = read(partial / "results.parquet").height
    assert 0 < answered < 120

    result = run_cli("diff", str(full), str(partial), "--json")
    assert result.returncode == 1  # the comparison is partial, and says so
    counts = json.loads(result.stdout)
    assert (counts["added"], counts["removed"], counts["changed"]) == (0, 0, 0)
    assert counts["not_compared"] == 120 - answered
    assert str(partial) in counts["unfinished"][0]
    text = run_cli("diff", str(full), str(partial))
    assert "did not finish" in text.stderr
    assert f"{120 - answered} not compared" in text.stdout


def test_diff_refuses_what_is_not_a_flow_associations_run(tmp_path: Path) -> None:
    result = run_cli("diff", str(tmp_path / "a"), str(tmp_path / "b"))
    assert result.returncode == 2
    assert "not a connect-bulk run directory" in json.loads(result.stderr)["message"]
