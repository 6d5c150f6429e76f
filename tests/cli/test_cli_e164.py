"""E.164 numbers, resolved per instance through ListPhoneNumbersV2, in two regions."""

from __future__ import annotations

from pathlib import Path

from tests.cli.world import build_world, read, write_csv
from tests.conftest import Sandbox, run_cli

LIST = "ListPhoneNumbersV2"


def _format(e164: str, style: int) -> str:
    """+15557000001 as people type it."""
    digits = e164[2:]
    return [e164, f"+1 {digits[:3]} {digits[3:6]} {digits[6:]}",
            f"+1 ({digits[:3]}) {digits[3:6]}-{digits[6:]}"][style % 3]


def test_e164_numbers_in_two_regions_resolve_and_answer_from_their_region(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    east = build_world(sandbox, instances=1, numbers_per_instance=120)
    west = build_world(sandbox, instances=1, numbers_per_instance=30, region="eu-west-2",
                       first_number=15558000000)
    rows = [[east.instances[0]["Arn"], _format(n.e164, i)] for i, n in enumerate(east.numbers)]
    rows += [[west.instances[0]["Arn"], _format(n.e164, i)] for i, n in enumerate(west.numbers)]
    rows.append([west.instances[0]["Arn"], "+44 20 7946 0000"])  # not claimed there
    rows.append([east.instances[0]["Arn"], east.numbers[0].id])  # the ID of a listed number
    path = write_csv(tmp_path / "in.csv", ["instance", "phone number"], rows)
    out = tmp_path / "out"
    result = run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                     "--out", str(out), "--run-id", "e", "--rate", "50", "--concurrency", "1",
                     CONNECT_BULK_CRASH_AT="wal-synced:1")
    assert result.returncode == -9  # killed after the first batch was written
    resumed = run_cli("resume", str(out / "e"))
    assert resumed.returncode == 1, resumed.stderr

    results = read(out / "e" / "results.parquet")
    expected = {n.e164: n for n in [*east.numbers, *west.numbers]}
    by_key = {row["item_key"]: row for row in results.iter_rows(named=True)}
    assert set(by_key) == set(expected) | {east.numbers[0].id}
    for e164, number in expected.items():
        row = by_key[e164]
        assert (row["phone_number_id"], row["phone_number_arn"], row["phone_number"]) == (
            number.id, number.arn, e164)
        assert row["flow_id"] == number.flow_arn
        assert row["region"] == ("eu-west-2" if e164.startswith("+1555800") else "us-east-1")
    # The number given by its ID got its E.164 too: the instance had been listed anyway.
    assert by_key[east.numbers[0].id]["phone_number"] == east.numbers[0].e164
    failures = read(out / "e" / "failures.parquet")
    assert failures.select("item_key", "error_code").rows() == [
        ("+442079460000", "PhoneNumberNotFound")]
    # Each instance listed once, across the kill: resume read the listing from the run.
    assert sandbox.stats()["calls"][LIST] == 2
