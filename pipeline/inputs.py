"""Reading an input file with Polars: CSV (optionally gzip, optionally with a BOM) or Parquet,
column names matched case-insensitively ignoring spaces, ``_`` and ``-``, every value read as a
trimmed string, rows numbered from 1.

The file is read once, a block of records at a time (``InputFile.blocks``), so that what a plan
holds is its items, never the input as read: Polars parses each block of a CSV (cut where a
record ends, outside quotes), or each batch of a Parquet file's row groups. The sha256 is of
exactly the bytes that were parsed.

A file that cannot be read, or lacks a required column, is an ``InputError`` naming the file and
the problem; everything about single rows is the job's to judge (rejects), never an error here.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import polars as pl

from .errors import InputError
from .job import Column

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
RESERVED = ("input_row", "reason")
#: bytes of CSV parsed at a time (a block ends where a record does)
BLOCK_BYTES = 4 << 20
#: rows of Parquet taken at a time
BLOCK_ROWS = 200_000


def normal_name(name: str) -> str:
    return re.sub(r"[\s_\-]+", "", name.lstrip("\ufeff")).lower()


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


def _explain(exc: Exception) -> str:
    """Polars' reason, in the words of someone who has to fix the file."""
    text = str(exc).strip()
    if "utf-8" in text.lower() or isinstance(exc, UnicodeDecodeError):
        return "it is not UTF-8 text; save it as UTF-8 (\"CSV UTF-8\" in Excel)"
    if "more fields than defined" in text:
        return "a row has more fields than the header has columns"
    first = text.splitlines()[0] if text else type(exc).__name__
    return first[:200]


class _Hashing(io.RawIOBase):
    """A binary file whose every byte read goes into a sha256."""

    def __init__(self, handle: IO[bytes]) -> None:
        super().__init__()
        self.handle, self.digest = handle, hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = self.handle.readinto(buffer)  # type: ignore[attr-defined]
        self.digest.update(memoryview(buffer)[:size])
        return int(size)


def _first_record_end(data: bytes) -> int:
    """Just after the first newline outside quotes (an even number of quotes before it: a
    quoted value may hold newlines, and its quotes come in pairs); -1 when there is none."""
    position = data.find(b"\n")
    while position >= 0 and data.count(b'"', 0, position) % 2:
        position = data.find(b"\n", position + 1)
    return position + 1 if position >= 0 else -1


def _last_record_end(data: bytes) -> int:
    """Just after the last newline outside quotes; 0 when there is none."""
    position = data.rfind(b"\n")
    while position >= 0 and data.count(b'"', 0, position) % 2:
        position = data.rfind(b"\n", 0, position)
    return position + 1


def _csv_pieces(stream: Any, size: int) -> Iterator[bytes]:
    """The stream as its header line, then pieces of about ``size`` bytes of whole records."""
    pending = b""
    while (block := stream.read(size)) and _first_record_end(pending + block) < 0:
        pending += block  # a header longer than a block
    pending += block
    end = _first_record_end(pending)
    end = len(pending) if end < 0 else end
    yield pending[:end]
    pending = pending[end:]
    while True:
        end = _last_record_end(pending) if block else len(pending)
        if end > 0:
            yield pending[:end]
            pending = pending[end:]
        if not block:
            return
        block = stream.read(size)
        pending += block


class InputFile:
    """One input file, read a block at a time. ``columns`` and ``mapping`` are known once it
    is opened; ``rows_total``, ``rows_blank`` and ``sha256`` once ``blocks`` is exhausted."""

    def __init__(self, path: Path, columns: tuple[Column, ...]) -> None:
        self.path, self.kind, self.job_columns = path, _kind(path), columns
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        self.mapping: dict[str, str] = {}
        self.original_columns: tuple[str, ...] = ()
        self.sha256 = ""
        self.rows_total = 0  # rows with a value somewhere: the rows the job judges
        self.rows_blank = 0  # rows with no value in any column (a spreadsheet's ",,,")

    @contextlib.contextmanager
    def reading(self) -> Iterator[None]:
        """Polars' and the system's reasons a file cannot be read, as ``InputError``."""
        try:
            yield
        except (OSError, EOFError, gzip.BadGzipFile) as exc:
            raise InputError(f"{self.path}: cannot be read: {exc}") from exc
        except pl.exceptions.NoDataError as exc:
            raise InputError(f"{self.path}: the file is empty") from exc
        except (pl.exceptions.PolarsError, UnicodeDecodeError) as exc:
            raise InputError(f"{self.path}: not a readable {self.kind.upper()} file: "
                             f"{_explain(exc)}") from exc

    def blocks(self) -> Iterator[pl.DataFrame]:
        """``input_row`` and every original column as a string, blank rows left out (they
        keep their numbers), a block at a time; counts ``rows_total`` and ``rows_blank``."""
        self.rows_total = self.rows_blank = 0
        for frame, blanks in self._numbered():
            self.rows_blank += blanks
            self.rows_total += frame.height
            yield frame
        if self.rows_total + self.rows_blank == 0:
            raise InputError(f"{self.path}: the file has a header but no data rows")

    def _numbered(self) -> Iterator[tuple[pl.DataFrame, int]]:
        """Each block without its blank rows, and how many there were."""
        offset = 1
        with self.reading():
            for raw in self._raw_blocks():
                frame = self._as_text(raw).with_row_index("input_row", offset=offset)
                offset += frame.height
                frame = frame.with_columns(pl.col("input_row").cast(pl.Int64))
                blank = frame.select(_blank(self.original_columns)).to_series()
                blanks = int(blank.sum())
                yield (frame.filter(~blank) if blanks else frame), blanks

    def canonical(self, block: pl.DataFrame) -> pl.DataFrame:
        """``input_row`` and the job's columns: trimmed, empty strings as absent values."""
        def value(name: str) -> pl.Expr:
            if name not in self.mapping:
                return pl.lit(None, dtype=pl.String).alias(name)
            trimmed = pl.col(self.mapping[name]).str.strip_chars()
            return pl.when(trimmed != "").then(trimmed).alias(name)

        return block.select("input_row", *(value(c.name) for c in self.job_columns))

    def originals(self, block: pl.DataFrame, rows: pl.DataFrame) -> pl.DataFrame:
        """``input_row``, ``reason`` and each original column (made inert) of ``rows``
        (``input_row``, ``reason``) found in ``block``."""
        picked = block.join(rows.select("input_row"), on="input_row", how="semi").select(
            "input_row",
            *(inert(pl.col(name)).alias(f"input_{name}" if name in RESERVED else name)
              for name in self.original_columns),
        )
        return rows.select("input_row", "reason").join(picked, on="input_row", how="inner")

    def rejects_of(self, rows: pl.DataFrame) -> pl.DataFrame:
        """The original columns of some rows, read again (a rule across rows refused them
        once every row was read); the file must be the one read the first time."""
        sha256 = self.sha256
        found = [self.originals(block, rows) for block, _ in self._numbered()]
        if self.sha256 != sha256:
            raise self._changed()
        return pl.concat(found)

    def _changed(self) -> InputError:
        return InputError(f"{self.path}: the file changed while it was being read; run again "
                          "once it is complete")

    # -- the two formats ---------------------------------------------------------------------

    def _raw_blocks(self) -> Iterator[pl.DataFrame]:
        if self.kind == "parquet":
            yield from self._parquet_blocks()
            return
        with self.path.open("rb") as raw:
            hashing = _Hashing(raw)
            stream: Any = hashing
            if self.path.name.lower().endswith(".gz"):
                stream = gzip.GzipFile(fileobj=hashing, mode="rb")
            pieces = _csv_pieces(stream, BLOCK_BYTES)
            header = next(pieces, b"")
            for magic, what in _MAGIC:
                if header.startswith(magic):
                    raise InputError(f"{self.path}: this is {what}, not CSV text; save it as "
                                     "CSV UTF-8 (\"CSV UTF-8\" in Excel's Save As)")
            first = True
            for piece in pieces:
                yield self._parse_csv(header + piece, first)
                first = False
            if first:  # a header and nothing else
                yield self._parse_csv(header, first)
            while hashing.read(1 << 20):
                pass  # what gzip left unread (trailing bytes) is the file's too
            self.sha256 = hashing.digest.hexdigest()

    def _parse_csv(self, data: bytes, first: bool) -> pl.DataFrame:
        frame = pl.read_csv(data, infer_schema=False, encoding="utf8",
                            truncate_ragged_lines=False, raise_if_empty=True)
        if first:
            self._open(frame.schema)
        return frame

    def _parquet_blocks(self) -> Iterator[pl.DataFrame]:
        before = self.path.stat()
        self.sha256 = sha256_of(self.path)
        scan = pl.scan_parquet(self.path)
        self._open(scan.collect_schema())
        yield from scan.select(self.original_columns).collect_batches(chunk_size=BLOCK_ROWS)
        after = self.path.stat()
        if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
            raise self._changed()

    # -- the header ---------------------------------------------------------------------------

    def _open(self, schema: pl.Schema) -> None:
        """Map the job's columns to the file's; a nested or binary column the job needs is an
        error, one it does not need is left out."""
        self.mapping = _mapping(self.path, schema.names(), self.job_columns)
        used = set(self.mapping.values())
        kept = []
        for name, dtype in schema.items():
            if dtype.is_nested() or dtype == pl.Binary or dtype == pl.Object:
                if name in used:
                    raise InputError(f"{self.path}: column {name} holds {dtype}, not text or "
                                     "numbers")
                continue
            kept.append(name)
        self.original_columns = tuple(kept)

    def _as_text(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.select(pl.col(name).cast(pl.String, strict=False)
                            for name in self.original_columns)


def _blank(names: tuple[str, ...]) -> pl.Expr:
    """A row with nothing in any column is no row: spreadsheets save trailing ones as ",,"."""
    return pl.all_horizontal(
        pl.col(name).is_null() | (pl.col(name).str.strip_chars() == "") for name in names)


def _mapping(path: Path, names: list[str], columns: tuple[Column, ...]) -> dict[str, str]:
    """Each of the job's columns found in the file (canonical name -> the file's name)."""
    by_normal: dict[str, str] = {}
    for original in names:
        by_normal.setdefault(normal_name(original), original)
    mapping: dict[str, str] = {}
    for column in columns:
        aliases = (column.name, *column.aliases)
        found = [by_normal[normal_name(n)] for n in aliases if normal_name(n) in by_normal]
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
            header = "".join(names)
            for delimiter, name in ((";", "semicolons"), ("\t", "tabs"), ("|", "pipes")):
                if delimiter in header:
                    hint = f"; the header seems separated by {name}: use commas"
                    break
            raise InputError(f"{path}: missing required column {column.name}{also}{hint}")
    return mapping


def inert(column: pl.Expr) -> pl.Expr:
    """A value a spreadsheet would run as a formula (``=cmd|…``, ``+``, ``-``, ``@``, tab, CR
    first) gets a leading quote, as OWASP advises for data that may be opened in Excel."""
    return pl.when(column.str.contains(r"^[=+\-@\t\r]")).then(pl.lit("'") + column).otherwise(
        column)
