"""A corpus of bad inputs: each gives exit 2 with one clear line and no call, or its rows in
rejects; never a traceback. Formula-like values come out inert."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from tests.cli.world import build_world, read, write_csv
from tests.conftest import Sandbox, run_cli

CORPUS = Path(__file__).parent / "corpus"
EXPECTED = {
    "empty.csv": "the file is empty",
    "header-only.csv": "has a header but no data rows",
    "semicolons.csv": "the header seems separated by semicolons: use commas",
    "binary-junk.csv": "not UTF-8 text",
    "truncated.csv.gz": "cannot be read",
    "nested-types.parquet": "column instance_id holds List(Int64), not text or numbers",
    "latin-1.csv": "not UTF-8 text",
    "not-parquet.parquet": "not a readable PARQUET file",
    "ragged.csv": "a row has more fields than the header has columns",
}


def _assert_one_clear_line(result: object, path: Path, fragment: str) -> None:
    stderr = result.stderr  # type: ignore[attr-defined]
    assert result.returncode == 2, stderr  # type: ignore[attr-defined]
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert fragment in lines[0] and str(path) in lines[0]
    assert len(lines[0]) < 400


def test_the_corpus_is_complete() -> None:
    assert sorted(p.name for p in CORPUS.iterdir()) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_bad_file_exits_2_with_one_line_and_no_call(sandbox: Sandbox, tmp_path: Path,
                                                          name: str) -> None:
    path = CORPUS / name
    result = run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                     "--region", "us-east-1", "--out", str(tmp_path), "--log-format", "text")
    _assert_one_clear_line(result, path, EXPECTED[name])
    assert sandbox.stats()["calls"] == {}
    assert list(tmp_path.iterdir()) == []
    planned = run_cli("plan", "flow-associations", str(path), "--log-format", "text")
    _assert_one_clear_line(planned, path, EXPECTED[name])


def test_a_million_column_line(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    with path.open("w") as handle:
        handle.write("instance_id,phone_number\n")
        handle.write(",".join(["x"] * 1_000_000) + "\n")
    result = run_cli("plan", "flow-associations", str(path), "--log-format", "text")
    _assert_one_clear_line(result, path, "more fields than the header")


FORMULAS = ["=cmd|' /C calc'!A0", "+1+cmd|' /C calc'!A0", "@SUM(1+1)*cmd|' /C calc'!A0",
            "-2+3+cmd|' /C calc'!A0", "\t=1+1"]


def test_mixed_rows_and_formula_injection_come_out_inert_everywhere(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    world = build_world(sandbox, instances=1, numbers_per_instance=5)
    instance = world.instances[0]
    rows = [[instance["Arn"], n.id] for n in world.numbers]
    rows += [[formula, world.numbers[0].id] for formula in FORMULAS]
    rows += [[instance["Id"], formula] for formula in FORMULAS]
    path = write_csv(tmp_path / "mixed.csv", ["instance_id", "=phone_number"], rows)
    path.write_text(path.read_text().replace("=phone_number", "phone_number"))
    result = run_cli("run", "flow-associations", str(path), "--endpoint-url", sandbox.url,
                     "--region", "us-east-1", "--out", str(tmp_path / "out"), "--run-id", "m")
    assert result.returncode == 1, result.stderr
    run_dir = tmp_path / "out" / "m"
    assert read(run_dir / "results.parquet").height == 5
    rejects = read(run_dir / "rejects.parquet")
    assert rejects.height == 2 * len(FORMULAS)
    # Every string in every output starts with something a spreadsheet shows as text.
    for name in ("results.parquet", "failures.parquet", "rejects.parquet"):
        frame = read(run_dir / name)
        for column in frame.select(pl.col(pl.String)).columns:
            for value in frame[column].drop_nulls():
                assert not value.startswith(("=", "+", "-", "@", "\t", "\r")), (name, value)
    assert rejects["instance_id"][0] == "'=cmd|' /C calc'!A0"
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        for value in json.loads(line).values():
            assert not str(value).startswith(("=", "+", "@"))
