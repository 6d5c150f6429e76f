"""What the notebooks share: finding the run a user means, and charts that read well.

Every chart is titled, its axes labelled, counts on whole-number ticks, each outcome in the same
colour in every run, rates in calls per second over time with a gap where the run was stopped.
matplotlib is imported only here and only by the notebooks (the ``notebooks`` extra).

``show`` also writes each figure's PNG and what it says (title, axis labels, tick labels) to
``CONNECT_BULK_FIGURES_DIR`` when set, so that a test can read the figures a notebook drew.
"""

from __future__ import annotations

import json
import os
import zlib
from pathlib import Path
from typing import Any

import polars as pl

# One colour per outcome, the same in every run and every notebook.
OUTCOME_COLOURS = {
    "associated": "#1b9e77", "succeeded": "#1b9e77", "SUCCEEDED": "#1b9e77",
    "started": "#66a61e", "reset_and_started": "#a6761d", "already_onboarded": "#7570b3",
    "IN_PROGRESS": "#e6ab02", "not associated": "#bdbdbd", "unchanged": "#bdbdbd",
    "disassociated": "#7570b3", "would_associate": "#80cdc1", "would_disassociate": "#c2a5cf",
    "failed, retryable": "#fdae61", "failed": "#d7191c", "pending": "#e0e0e0",
    "added": "#1b9e77", "removed": "#d95f02", "changed": "#7570b3", "not_compared": "#bdbdbd",
}
PALETTE = ("#1f78b4", "#33a02c", "#e31a1c", "#ff7f00", "#6a3d9a", "#b15928", "#a6cee3",
           "#b2df8a", "#fb9a99", "#fdbf6f", "#cab2d6")
GAP_S = 5.0  # progress is logged every second: a longer silence is a stop


def colour(outcome: str) -> str:
    """An outcome's colour: fixed for the known ones, stable (by name) for any other."""
    return OUTCOME_COLOURS.get(outcome) or PALETTE[zlib.crc32(outcome.encode()) % len(PALETTE)]


def find_run(job: str, env: str = "CONNECT_BULK_RUN_DIR") -> Path:
    """The run the user means: ``$CONNECT_BULK_RUN_DIR`` (relative to where they started
    Jupyter, not to the kernel's folder), else the newest run of ``job`` under data/runs."""
    starts = [Path(p) for p in (os.environ.get("PWD"), os.getcwd()) if p]
    given = os.environ.get(env)
    if given:
        for start in starts:
            candidate = (start / given).resolve()
            if (candidate / "run.json").is_file():
                return candidate
        raise SystemExit(f"{given}: no run directory there (looked from {starts[0]})")
    for start in starts:
        for folder in (start, *start.parents):
            runs = [p.parent for p in (folder / "data" / "runs").glob("*/run.json")
                    if json.loads(p.read_text()).get("job") == job]
            if runs:
                return max(runs, key=lambda p: json.loads(
                    (p / "run.json").read_text())["created_at"])
    raise SystemExit(f"no {job} run found under data/runs: run `make demo`, or set {env}")


def other_job(run_dir: Path, job: str) -> str | None:
    """One line when the run is of another job than the notebook's."""
    found = json.loads((run_dir / "run.json").read_text()).get("job")
    return None if found == job else (
        f"{run_dir.name} is a {found} run; this notebook reads {job} runs")


def named(frame: pl.DataFrame) -> pl.DataFrame:
    """An ``instance`` column: the alias an administrator knows, the ID where there is none."""
    alias = pl.col("instance_alias") if "instance_alias" in frame.columns else pl.lit(None)
    return frame.with_columns(pl.coalesce(alias, pl.col("instance_id")).alias("instance"))


def rates(events: pl.DataFrame) -> pl.DataFrame:
    """Calls and throttles per second over time, from the run's log (each execution's start
    and end, and its progress every second); a row of nulls wherever the run was stopped and
    started again, so that a line breaks there."""
    schema: dict[str, Any] = {"at": pl.Datetime("us", "UTC"), "calls_per_s": pl.Float64,
              "throttled_per_s": pl.Float64}
    if "calls_made" not in events.columns:
        return pl.DataFrame(schema=schema)
    points = events.filter(
        pl.col("event").is_in(["run_started", "progress", "run_finished"])
        & pl.col("calls_made").is_not_null()
    ).select(pl.col("ts").str.to_datetime(time_zone="UTC").alias("at"), "event",
             pl.col("calls_made").cast(pl.Float64),
             pl.col("calls_throttled").cast(pl.Float64))
    rows: list[dict[str, Any]] = []
    previous: dict[str, Any] | None = None
    for point in points.iter_rows(named=True):
        if point["event"] == "run_started":
            if previous is not None:
                rows.append({"at": point["at"], "calls_per_s": None, "throttled_per_s": None})
            previous = point
            continue
        if previous is None:
            previous = point
            continue
        seconds = max((point["at"] - previous["at"]).total_seconds(), 1.0)
        if seconds > GAP_S and point["event"] == "progress":
            rows.append({"at": point["at"], "calls_per_s": None, "throttled_per_s": None})
        rows.append({
            "at": point["at"],
            "calls_per_s": (point["calls_made"] - previous["calls_made"]) / seconds,
            "throttled_per_s": (point["calls_throttled"] - previous["calls_throttled"])
            / seconds,
        })
        previous = point
    return pl.DataFrame(rows, schema=schema)


def whole_numbers(axis: Any) -> None:
    """Counts have whole-number ticks (no 0.5 of a phone number)."""
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def show(fig: Any, name: str) -> None:
    """Display ``fig``; with ``CONNECT_BULK_FIGURES_DIR`` set, also write ``name``.png and
    ``name``.json (what the figure says) there."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    folder = os.environ.get("CONNECT_BULK_FIGURES_DIR")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        fig.canvas.draw()
        said = [{
            "title": ax.get_title() or fig.get_suptitle(),
            "xlabel": ax.get_xlabel(), "ylabel": ax.get_ylabel(),
            "xticks": [t.get_text() for t in ax.get_xticklabels()],
            "yticks": [t.get_text() for t in ax.get_yticklabels()],
        } for ax in fig.get_axes()]
        (Path(folder) / f"{name}.json").write_text(json.dumps(said, indent=1))
        fig.savefig(Path(folder) / f"{name}.png", dpi=80)
    plt.show()


class OtherJob(Exception):
    """A notebook given a run of another job: said in one line, no traceback."""

    def _render_traceback_(self) -> list[str]:  # IPython's hook for how an error is shown
        return [str(self)]


def require_job(run_dir: Path, job: str) -> None:
    message = other_job(run_dir, job)
    if message:
        raise OtherJob(message)


def failure_counts(failures: pl.DataFrame) -> pl.DataFrame:
    """Failures per error code, split into retryable and not."""
    return (
        failures.group_by("error_code")
        .agg(pl.col("retryable").sum().alias("failed, retryable"),
             (~pl.col("retryable")).sum().alias("failed"))
        .with_columns(pl.col("failed, retryable", "failed").cast(pl.Int64))
        .sort("error_code")
    )


ORDER = ("associated", "started", "reset_and_started", "already_onboarded", "SUCCEEDED",
         "disassociated", "would_associate", "would_disassociate", "unchanged",
         "not associated", "IN_PROGRESS", "failed, retryable", "failed", "pending")


def outcomes(results: pl.DataFrame, failures: pl.DataFrame, summary: dict[str, Any], *,
             outcome: pl.Expr, by: str | None = "instance") -> pl.DataFrame:
    """Items per ``by`` (the instance's name, or one row "all") and outcome: the results'
    ``outcome``, failures retryable or not, and (for "all") what is still pending."""
    key = by or "all"
    group = (pl.col(by) if by else pl.lit("all")).alias(key)
    names = results.select("instance_id", "instance").unique("instance_id")
    failed = failures.join(names, on="instance_id", how="left").with_columns(
        pl.coalesce("instance", "instance_id").alias("instance"),
        pl.when(pl.col("retryable")).then(pl.lit("failed, retryable"))
        .otherwise(pl.lit("failed")).alias("outcome"))
    counts = pl.concat([results.select(group, outcome.alias("outcome")),
                        failed.select(group, "outcome")]).group_by(key, "outcome").len()
    if by is None and summary.get("items_pending"):
        counts = pl.concat([counts, pl.DataFrame(
            {key: ["all"], "outcome": ["pending"], "len": [int(summary["items_pending"])]},
            schema=counts.schema)])
    wide = counts.pivot(on="outcome", index=key, values="len")
    present = [o for o in ORDER if o in wide.columns]
    present += sorted(c for c in wide.columns if c not in present and c != key)
    return wide.select(key, *present).fill_null(0).sort(key)


def stacked(ax: Any, frame: pl.DataFrame, label: str) -> None:
    """Horizontal bars of ``frame`` (one row a bar, one column an outcome), stacked in the
    same order and colours in every run."""
    left = [0] * frame.height
    labels = [str(v) for v in frame[label].to_list()]
    for column in frame.columns:
        if column == label:
            continue
        values = frame[column].to_list()
        ax.barh(labels, values, left=left, label=column, color=colour(column))
        left = [a + b for a, b in zip(left, values, strict=True)]
    whole_numbers(ax.xaxis)
    ax.legend(loc="lower right", fontsize="small")


def find_runs_folder(given: str | None) -> Path:
    """A folder of runs: ``given`` (relative to where Jupyter started), else data/runs."""
    starts = [Path(p) for p in (os.environ.get("PWD"), os.getcwd()) if p]
    for start in starts:
        if given and (start / given).is_dir():
            return (start / given).resolve()
        if not given:
            for folder in (start, *start.parents):
                if (folder / "data" / "runs").is_dir():
                    return folder / "data" / "runs"
    raise SystemExit(f"{given or 'data/runs'}: no such folder of runs")


def same_input_runs(folder: Path, job: str) -> tuple[list[Path], list[tuple[str, str]]]:
    """The runs of ``job`` over the same input as the newest one, oldest first, and the runs
    left out with the reason."""
    found, skipped = [], []
    for run_json in folder.glob("*/run.json"):
        run = json.loads(run_json.read_text())
        if run.get("job") != job:
            skipped.append((run_json.parent.name, f"a {run.get('job')} run"))
        elif not (run_json.parent / "results.parquet").is_file():
            skipped.append((run_json.parent.name, "no results yet"))
        else:
            found.append((run["created_at"], run["input"]["sha256"], run_json.parent))
    if not found:
        return [], skipped
    found.sort()
    newest_input = found[-1][1]
    runs = [path for _, sha, path in found if sha == newest_input]
    skipped += [(path.name, f"another input (sha256 {sha[:12]}…)")
                for _, sha, path in found if sha != newest_input]
    return runs, sorted(skipped)


def time_axis(ax: Any, times: list[Any]) -> None:
    """Clock times on the x axis (UTC), with room around a run of a few seconds."""
    from datetime import timedelta

    import matplotlib.dates as mdates

    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S"))  # type: ignore[no-untyped-call]
    known = [t for t in times if t is not None]
    if known:
        ax.set_xlim(min(known) - timedelta(seconds=5), max(known) + timedelta(seconds=5))
