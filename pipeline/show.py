"""``connect-bulk show``: a run's Parquet outputs for people (a table on a TTY, failures grouped
by error code first) and for spreadsheets and scripts (CSV, JSON lines)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from .errors import DamagedRun, UsageError
from .inputs import inert
from .rundir import RunDir

TABLE_ROWS = 50
# A table is for reading: the columns that say what happened, the rest is in CSV and JSON.
FAILURE_COLUMNS = ("item_key", "input_row", "error_code", "retryable", "attempts",
                   "error_message")
HIDDEN_IN_TABLE = ("batch_id", "region", "account_id", "attempts", "completed_at")


def _path(rundir: RunDir, what: str) -> Path:
    return rundir.path / f"{what}.parquet"


def _default(rundir: RunDir) -> str:
    failures = _path(rundir, "failures")
    if failures.is_file() and pl.scan_parquet(failures).select(pl.len()).collect().item():
        return "failures"
    return "results"


def show_run(run_dir: Path, what: str | None, *, fmt: str, limit: int | None,
             echo: Callable[..., None]) -> None:
    rundir = RunDir(run_dir)
    rundir.read_run()
    what = what or _default(rundir)
    path = _path(rundir, what)
    if not path.is_file():
        hint = ("this run's job writes none" if what == "rollback"
                else "the run has not finished an execution yet")
        raise UsageError(f"{path}: no {what} in this run ({hint})")
    try:
        frame = pl.read_parquet(path)
    except pl.exceptions.PolarsError as exc:
        raise DamagedRun(path, f"not a readable Parquet file ({str(exc)[:120]})") from exc
    if fmt == "table":
        _table(frame, what, path, limit)
        return
    if limit is not None:
        frame = frame.head(limit)
    if fmt == "json":
        echo(frame.write_ndjson(), nl=False)
        return
    # A spreadsheet runs a cell starting with = + - @ as a formula: those get a leading quote.
    strings = [name for name, dtype in frame.schema.items() if dtype == pl.String]
    text = frame.with_columns(inert(pl.col(name)).alias(name) for name in strings).write_csv(
        datetime_format="%Y-%m-%dT%H:%M:%S%.fZ")
    echo(text, nl=False)


def _table(frame: pl.DataFrame, what: str, path: Path, limit: int | None) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    if what == "failures" and frame.height:
        console.print(_failure_groups(frame, Table))
    if what == "failures":
        shown = frame.select(FAILURE_COLUMNS)
    else:
        shown = frame.drop([c for c in HIDDEN_IN_TABLE if c in frame.columns])
    rows = shown.head(TABLE_ROWS if limit is None else limit)
    table = Table(title=f"{what}: {frame.height} rows ({path})", title_justify="left")
    for column in rows.columns:
        table.add_column(column, overflow="fold")
    for row in rows.iter_rows():
        table.add_row(*(_cell(value) for value in row))
    console.print(table)
    if rows.height < frame.height:
        console.print(f"{frame.height - rows.height} more rows: --limit N, or --format csv")


def _failure_groups(frame: pl.DataFrame, table_class: Any) -> Any:
    groups = (
        frame.group_by("error_code")
        .agg(pl.len().alias("count"), pl.col("retryable").first(),
             pl.col("item_key").first().alias("example"),
             pl.col("error_message").first().alias("message"))
        .sort("count", "error_code", descending=[True, False])
    )
    table = table_class(title=f"failures by error code ({frame.height} items)",
                        title_justify="left")
    for column in ("error_code", "count", "retryable", "example", "message"):
        table.add_column(column, overflow="fold",
                         justify="right" if column == "count" else "left")
    for row in groups.iter_rows(named=True):
        table.add_row(row["error_code"], str(row["count"]),
                      "yes (retry redrives it)" if row["retryable"] else "no",
                      row["example"], row["message"])
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if hasattr(value, "isoformat"):
        return str(value.isoformat(timespec="seconds"))
    return str(value)
