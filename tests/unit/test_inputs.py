"""Reading inputs: formats, BOM, aliases, trimming, and the errors that stop a run."""

from __future__ import annotations

import gzip
from pathlib import Path

import polars as pl
import pytest
from connect_bulk.pipeline.errors import InputError
from connect_bulk.pipeline.inputs import InputFile, normal_name
from connect_bulk.pipeline.job import Column

COLUMNS = (Column("instance_id", ("instance", "instance_arn")),
           Column("kms_key_arn", ("key_arn",), required=False))


def read_input(path: Path, columns: tuple[Column, ...]) -> InputFile:
    """Every block read, as a plan reads them; the canonical rows in ``frame``."""
    source = InputFile(path, columns)
    source.frame = pl.concat(  # type: ignore[attr-defined]
        [source.canonical(block) for block in source.blocks()])
    return source


@pytest.mark.parametrize("name", ["instance_id", "Instance ID", " INSTANCE-ID", "\ufeffinstanceId"])
def test_names_match_ignoring_case_spaces_underscores_and_dashes(name: str) -> None:
    assert normal_name(name) == "instanceid"


def test_csv_with_bom_alias_and_spaces(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes("\ufeffInstance ARN,Other\n  a  ,x\n,y\n".encode())
    table = read_input(path, COLUMNS)
    frame = table.frame
    assert frame["instance_id"].to_list() == ["a", None]
    assert frame["kms_key_arn"].to_list() == [None, None]
    assert frame["input_row"].to_list() == [1, 2]
    assert table.mapping == {"instance_id": "Instance ARN"}


def test_gzip_csv_and_parquet_with_numbers(tmp_path: Path) -> None:
    gz = tmp_path / "in.csv.gz"
    gz.write_bytes(gzip.compress(b"instance,key_arn\n1,k\n"))
    assert read_input(gz, COLUMNS).frame["instance_id"].to_list() == ["1"]
    pq = tmp_path / "in.parquet"
    pl.DataFrame({"instance": [7, 8]}).write_parquet(pq)
    assert read_input(pq, COLUMNS).frame["instance_id"].to_list() == ["7", "8"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("in.csv", b"", "the file is empty"),
        ("in.csv", b"other\nx\n", "missing required column instance_id (also accepted: "
                                  "instance, instance_arn)"),
        ("in.txt", b"instance_id\nx\n", "unsupported file type"),
        ("in.csv.gz", b"not gzip at all", "cannot be read"),
        ("in.parquet", b"PAR1 but not really", "not a readable PARQUET file"),
    ],
)
def test_unusable_files_are_input_errors_naming_the_file(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError) as exc:
        read_input(path, COLUMNS)
    assert message in str(exc.value)
    assert str(path) in str(exc.value)
    assert "\n" not in str(exc.value)
