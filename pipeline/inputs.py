"""Reading an input file with Polars: CSV (optionally gzip, optionally with a BOM) or Parquet,
column names matched case-insensitively ignoring spaces, ``_`` and ``-``, every value read as a
trimmed string, rows numbered from 1.

A file that cannot be read, or lacks a required column, is an ``InputError`` naming the file and
the problem; everything about single rows is the job's to judge (rejects), never an error here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from .crashpoints import crashpoint
from .errors import InputError
from .job import Column

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
RESERVED = ("input_row", "reason")


def normal_name(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lstrip("\ufeff")).lower()


@dataclass(frozen=True, slots=True)
class InputTable:
    """The input as strings: the job's canonical columns, ``input_row``, and the original
    columns under their own names (for rejects)."""

    frame: pl.DataFrame
    original_columns: tuple[str, ...]
    mapping: dict[str, str]  # canonical name -> original name
    sha256: str = ""
    #: rows with no value in any column (a spreadsheet's trailing ",,,"), left out
    rows_blank: int = 0


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _kind(path: Path) -> str:
    name = path.name.lower()
    if name.endswith(CSV_SUFFIXES):
        return "csv"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    raise InputError(
        f"{path}: unsupported file type; use .csv, .csv.gz, .parquet or .pq"
    )


# Files people save by mistake under a .csv name: named for what they are.
_MAGIC = ((b"PK\x03\x04", "an Excel workbook (XLSX) or another ZIP file"),
          (b"\xd0\xcf\x11\xe0", "an old Excel workbook (XLS)"),
          (b"%PDF", "a PDF document"))


def _read(path: Path) -> tuple[pl.DataFrame, str]:
    """The file parsed, and the sha256 of exactly the bytes that were parsed (a file replaced
    while being read is recorded as what was read, never as what came after)."""
    kind = _kind(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    try:
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        crashpoint("input-read")
        if kind == "parquet":
            return pl.read_parquet(io.BytesIO(data)), digest
        if path.name.lower().endswith(".gz"):
            data = gzip.decompress(data)
        for magic, what in _MAGIC:
            if data.startswith(magic):
                raise InputError(f"{path}: this is {what}, not CSV text; save it as CSV UTF-8 "
                                 "(\"CSV UTF-8\" in Excel's Save As)")
        return pl.read_csv(
            data, infer_schema=False, encoding="utf8", truncate_ragged_lines=False,
            raise_if_empty=True,
        ), digest
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{path}: cannot be read: {exc}") from exc
    except pl.exceptions.NoDataError as exc:
        raise InputError(f"{path}: the file is empty") from exc
    except (pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable {kind.upper()} file: {_explain(exc)}") from exc


def _explain(exc: Exception) -> str:
    """Polars' reason, in the words of someone who has to fix the file."""
    text = str(exc).strip()
    if "utf-8" in text.lower() or isinstance(exc, UnicodeDecodeError):
        return "it is not UTF-8 text; save it as UTF-8 (\"CSV UTF-8\" in Excel)"
    if "more fields than defined" in text:
        return "a row has more fields than the header has columns"
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:200]


def _as_text(frame: pl.DataFrame, path: Path, used: set[str]) -> pl.DataFrame:
    """Every column as a string; a nested or binary column the job needs is an error, one it
    does not need is left out."""
    keep = []
    for name, dtype in frame.schema.items():
        if dtype.is_nested() or dtype == pl.Binary or dtype == pl.Object:
            if name in used:
                raise InputError(f"{path}: column {name} holds {dtype}, not text or numbers")
            continue
        keep.append(pl.col(name).cast(pl.String, strict=False))
    return frame.select(keep)


def read_input(path: Path, columns: tuple[Column, ...]) -> InputTable:
    frame, digest = _read(path)
    if frame.height == 0:
        raise InputError(f"{path}: the file has a header but no data rows")
    by_normal: dict[str, str] = {}
    for original in frame.columns:
        by_normal.setdefault(normal_name(original), original)
    mapping: dict[str, str] = {}
    for column in columns:
        names = (column.name, *column.aliases)
        found = [by_normal[normal_name(n)] for n in names if normal_name(n) in by_normal]
        unique = list(dict.fromkeys(found))
        if len(unique) > 1:
            raise InputError(
                f"{path}: columns {', '.join(unique)} all mean {column.name}; keep one"
            )
        if unique:
            mapping[column.name] = unique[0]
        elif column.required:
            also = f" (also accepted: {', '.join(column.aliases)})" if column.aliases else ""
            hint = ""
            header = "".join(frame.columns)
            for delimiter, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
                if delimiter in header:
                    hint = f"; the header seems separated by {name}: use commas"
                    break
            raise InputError(f"{path}: missing required column {column.name}{also}{hint}")
    frame = _as_text(frame, path, set(mapping.values()))
    # The canonical columns share the originals' memory unless a value has to change: trimmed,
    # or an empty string made absent (a copy of a million values is a hundred megabytes).
    canonical = [_canonical(frame, original).alias(name) for name, original in mapping.items()]
    missing = [
        pl.lit(None, dtype=pl.String).alias(c.name) for c in columns if c.name not in mapping
    ]
    originals = [pl.col(name).alias(f"__in__{name}") for name in frame.columns]
    table = frame.select(
        *canonical, *missing, *originals
    ).with_row_index("input_row", offset=1).with_columns(pl.col("input_row").cast(pl.Int64))
    # A row with nothing in any column is no row: spreadsheets save trailing ones as ",,".
    blank = pl.all_horizontal(
        pl.col(f"__in__{name}").is_null() | (pl.col(f"__in__{name}").str.strip_chars() == "")
        for name in frame.columns
    )
    blanks = int(table.select(blank.sum()).item())
    if blanks:  # a filter copies every column: only when there is something to drop
        table = table.filter(~blank)
    return InputTable(table, tuple(frame.columns), mapping, digest, blanks)


def _canonical(frame: pl.DataFrame, name: str) -> pl.Expr:
    """The column trimmed, with empty strings as absent values; the column itself (no copy)
    when no value needs either."""
    column = pl.col(name)
    needs = frame.select(
        column.str.contains(r"^\s|\s$").any().alias("trim"),
        (column.str.len_bytes() == 0).any().alias("empty"),
    ).row(0)
    if needs[0]:
        column = column.str.strip_chars()
    if needs[0] or needs[1]:
        column = pl.when(column == "").then(None).otherwise(column)
    return column


def inert(column: pl.Expr) -> pl.Expr:
    """A value a spreadsheet would run as a formula (``=cmd|…``, ``+``, ``-``, ``@``, tab, CR
    first) gets a leading quote, as OWASP advises for data that may be opened in Excel."""
    return pl.when(column.str.contains(r"^[=+\-@\t\r]")).then(pl.lit("'") + column).otherwise(
        column)


def rejects_frame(table: InputTable, rejects: pl.DataFrame) -> pl.DataFrame:
    """``input_row``, ``reason`` and each original input column as a string (made inert)."""
    originals = table.frame.select(
        "input_row",
        *(
            inert(pl.col(f"__in__{name}")).alias(f"input_{name}" if name in RESERVED else name)
            for name in table.original_columns
        ),
    )
    joined = rejects.select("input_row", "reason").join(originals, on="input_row", how="left")
    return joined.sort("input_row")
