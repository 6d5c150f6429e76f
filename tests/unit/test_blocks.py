"""Reading an input a block at a time: the same rows, numbers, rejects and digest as reading
it whole, wherever the blocks are cut."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import polars as pl
import pytest
from connect_bulk.jobs.associate_flows import AssociateFlows
from connect_bulk.jobs.flow_associations import FlowAssociations
from connect_bulk.pipeline import inputs
from connect_bulk.pipeline.errors import InputError
from connect_bulk.pipeline.inputs import InputFile
from connect_bulk.pipeline.plan import prepare
from hypothesis import given, settings
from hypothesis import strategies as st

INSTANCE = "11111111-1111-4111-8111-111111111111"
COLUMNS = FlowAssociations.columns


def _number(n: int) -> str:
    return f"00000000-0000-4000-8000-{n:012d}"


# Values with what cuts a naive reader: commas, quotes, newlines inside quotes, blanks.
VALUE = st.text(alphabet=st.sampled_from(list('ab ,"\n\r;é')), max_size=6)


@settings(max_examples=60)
@given(rows=st.lists(st.tuples(VALUE, VALUE), max_size=30), size=st.integers(1, 40))
def test_blocks_cut_anywhere_give_the_rows_of_the_whole_file(
    rows: list[tuple[str, str]], size: int
) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["instance_id", "phone_number"])
    writer.writerows(rows)
    data = text.getvalue().encode()
    pieces = list(inputs._csv_pieces(io.BytesIO(data), size))
    assert b"".join(pieces) == data
    header = pieces[0]
    whole = pl.read_csv(data, infer_schema=False)
    parsed = [pl.read_csv(header + piece, infer_schema=False) for piece in pieces[1:]]
    assert pl.concat([whole.clear(), *parsed]).equals(whole)


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(inputs, "BLOCK_BYTES", 64)
    monkeypatch.setattr(inputs, "BLOCK_ROWS", 3)


def _write(path: Path, rows: list[list[str]], header: tuple[str, ...] = (
        "instance_id", "phone_number")) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_rows_are_numbered_across_blocks_and_the_digest_is_the_files(
    tmp_path: Path, small_blocks: None
) -> None:
    rows = [[INSTANCE, _number(n)] for n in range(20)]
    rows[7] = ["", " "]  # blank: left out, but it keeps its number
    rows[12] = [INSTANCE, "not a number"]
    path = _write(tmp_path / "in.csv", rows)
    source = InputFile(path, COLUMNS)
    blocks = list(source.blocks())
    assert len(blocks) > 3
    numbered = pl.concat(blocks)["input_row"].to_list()
    assert numbered == [n for n in range(1, 21) if n != 8]
    assert (source.rows_total, source.rows_blank) == (19, 1)
    assert source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    prepared = prepare(FlowAssociations(), path)
    assert prepared.rejects["input_row"].to_list() == [13]
    assert prepared.rejects["phone_number"].to_list() == ["not a number"]
    assert prepared.planned.items_total == 18


def test_parquet_is_read_in_batches_of_rows(tmp_path: Path, small_blocks: None) -> None:
    path = tmp_path / "in.parquet"
    pl.DataFrame({"Instance": [INSTANCE] * 10, "resource_id": [_number(n) for n in range(10)],
                  "n": list(range(10))}).write_parquet(path)
    source = InputFile(path, COLUMNS)
    blocks = list(source.blocks())
    assert len(blocks) == 4
    frame = pl.concat(source.canonical(b) for b in blocks)
    assert frame["input_row"].to_list() == list(range(1, 11))
    assert frame["phone_number"].to_list() == [_number(n) for n in range(10)]
    assert source.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_copies_in_many_blocks_are_counted_once_each(tmp_path: Path,
                                                     small_blocks: None) -> None:
    rows = [[INSTANCE, _number(1)]] * 25 + [[INSTANCE, _number(n)] for n in range(2, 6)]
    prepared = prepare(FlowAssociations(), _write(tmp_path / "in.csv", rows))
    assert (prepared.planned.items_total, prepared.planned.rows_duplicate) == (5, 24)
    first = prepared.planned.items.filter(pl.col("item_key") == _number(1))
    assert first["input_row"].to_list() == [1]


def test_a_rule_across_rows_sees_rows_of_different_blocks(tmp_path: Path,
                                                          small_blocks: None) -> None:
    rows = [[INSTANCE, _number(n), "Sales"] for n in range(12)]
    rows.append([INSTANCE, _number(0), "=Support"])  # number 0 again, another flow
    path = _write(tmp_path / "in.csv", rows, ("instance_id", "phone_number", "flow"))
    prepared = prepare(AssociateFlows(), path)
    rejects = {r["input_row"]: r for r in prepared.rejects.iter_rows(named=True)}
    assert set(rejects) == {1, 13}
    assert "rows 1, 13" in rejects[1]["reason"]
    assert rejects[13]["flow"] == "'=Support"  # the original, read again, made inert
    assert prepared.planned.items_total == 11


def test_a_file_changed_between_two_readings_is_an_error(tmp_path: Path,
                                                         small_blocks: None) -> None:
    path = _write(tmp_path / "in.csv", [[INSTANCE, _number(n)] for n in range(10)])
    source = InputFile(path, COLUMNS)
    list(source.blocks())
    _write(path, [[INSTANCE, _number(n)] for n in range(11)])
    with pytest.raises(InputError, match="changed while it was being read"):
        source.rejects_of(pl.DataFrame({"input_row": [1], "reason": ["x"]}))
