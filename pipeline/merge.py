"""``connect-bulk merge``: the shards of one input joined into one run directory.

The merged directory is a run like any other: its journal holds every item's outcome (one part
of results, one of failures), so ``status``, ``show``, ``diff`` and the notebooks read it as
they read one run, ``resume`` finds nothing pending, and ``retry`` redrives its failures in one
run without ``--shard``. Every item is in exactly one shard (shards are whole scopes), so the
join is a concatenation; the rejects, counted over the whole input, are each shard's alike.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import polars as pl

from . import __version__
from .errors import DamagedRun, UsageError
from .job import load_job_class
from .journal import FAILURE_SCHEMA, result_schema
from .parts import INTERNAL, PARQUET
from .record import ensure_valid
from .rundir import RunDir, atomic_write, iso, utc_now, write_json

FINISHED = ("succeeded", "completed_with_failures")


def _shards(run_dirs: list[Path]) -> list[tuple[RunDir, dict[str, Any], dict[str, Any]]]:
    """The shard runs, checked to be every shard of one input, each finished; by K."""
    shards = []
    for path in run_dirs:
        rundir = RunDir(path)
        run = rundir.read_run()
        ensure_valid(run, str(rundir.run_json))
        if "shard" not in run:
            raise UsageError(f"{path}: not a shard (started without --shard)")
        summary = rundir.read_summary()
        if summary.get("state") not in FINISHED or summary.get("items_pending"):
            raise UsageError(f"{path}: shard {run['shard']['k']}/{run['shard']['n']} is "
                             f"{summary.get('state', 'not started')} with "
                             f"{summary.get('items_pending')} items pending; resume it, then "
                             "merge")
        shards.append((rundir, run, summary))
    shards.sort(key=lambda s: s[1]["shard"]["k"])
    first = shards[0][1]
    for rundir, run, _ in shards[1:]:
        for key, what in (("job", "job"), ("job_options", "job options")):
            if run.get(key) != first.get(key):
                raise UsageError(f"{rundir.path}: another {what} than {shards[0][0].path}")
        if run["input"]["sha256"] != first["input"]["sha256"]:
            raise UsageError(f"{rundir.path}: another input than {shards[0][0].path}")
    n = first["shard"]["n"]
    ks = [run["shard"]["k"] for _, run, _ in shards]
    if any(run["shard"]["n"] != n for _, run, _ in shards) or ks != list(range(n)):
        missing = sorted(set(range(n)) - set(ks))
        twice = sorted({k for k in ks if ks.count(k) > 1})
        raise UsageError(f"merge needs every shard of {n} once: "
                         + (f"missing {', '.join(map(str, missing))}" if missing else "")
                         + ("; " if missing and twice else "")
                         + (f"given twice {', '.join(map(str, twice))}" if twice else ""))
    return shards


def merge(run_dirs: list[Path], out: Path) -> dict[str, Any]:
    """Write the merged run directory ``out``; returns its summary."""
    shards = _shards(run_dirs)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty; merge writes a new run directory")
    job_class = load_job_class(shards[0][1]["job"])
    schema = result_schema(job_class.result_schema)
    results = _joined([s[0].results for s in shards], schema)
    failures = _joined([s[0].failures for s in shards], FAILURE_SCHEMA)
    items = pl.concat([_read(s[0].items) for s in shards], how="vertical_relaxed")
    merged = RunDir(out)
    created = not out.exists()
    try:
        merged.parts.mkdir(parents=True, exist_ok=True)
        for frame, path, how in ((items, merged.items, INTERNAL),
                                 (results, merged.parts / "results-000001.parquet", INTERNAL),
                                 (failures, merged.parts / "failures-000001.parquet", INTERNAL),
                                 (results, merged.results, PARQUET),
                                 (failures, merged.failures, PARQUET)):
            with atomic_write(path) as tmp:
                frame.write_parquet(tmp, **how)
        shutil.copyfile(shards[0][0].rejects, merged.rejects)
        calls = _calls([s[2].get("calls", {}) for s in shards])
        write_json(merged.checkpoint, {"parts": ["results-000001.parquet",
                                                 "failures-000001.parquet"],
                                       "calls": calls, "updated_at": utc_now()})
        job_class(**shards[0][1].get("job_options", {})).finish(out, results)
        run = _run_record(out, shards, items.height)
        summary = _summary(out, shards, run, calls, results.height, failures.height)
        write_json(merged.summary_json, summary)
        write_json(merged.run_json, run)  # last: a directory without it is no run
    except OSError as exc:
        if created:  # a merge that could not be written leaves nothing behind
            shutil.rmtree(out, ignore_errors=True)
        raise UsageError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return summary


def _read(path: Path) -> pl.DataFrame:
    try:
        return pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as exc:
        raise DamagedRun(path, f"not a readable Parquet file ({str(exc)[:120]})") from exc


def _joined(paths: list[Path], schema: dict[str, Any]) -> pl.DataFrame:
    frames = [_read(path) for path in paths if path.is_file()]
    if not frames:
        return pl.DataFrame(schema=schema)
    return pl.concat(frames, how="vertical_relaxed").sort("input_row")


def _calls(per_shard: list[dict[str, dict[str, int]]]) -> dict[str, dict[str, int]]:
    total: dict[str, dict[str, int]] = {}
    for calls in per_shard:
        for operation, counts in calls.items():
            into = total.setdefault(operation, {})
            for name, value in counts.items():
                into[name] = into.get(name, 0) + int(value)
    return total


def _run_record(out: Path, shards: list[Any], items_total: int) -> dict[str, Any]:
    first = shards[0][1]
    run = {key: value for key, value in first.items() if key not in ("shard", "executions")}
    run["run_id"] = out.name
    run["options"] = dict(first["options"]) | {"shard": None}
    run["counts"] = dict(first["counts"]) | {"items_total": items_total}
    run["merged_from"] = [{"run_dir": str(rundir.path), "shard": f"{r['shard']['k']}/"
                           f"{r['shard']['n']}", "run_id": r["run_id"]}
                          for rundir, r, _ in shards]
    run["version"] = __version__
    run["created_at"] = min(r["created_at"] for _, r, _ in shards)
    return run


def _summary(out: Path, shards: list[Any], run: dict[str, Any],
             calls: dict[str, dict[str, int]], succeeded: int, failed: int) -> dict[str, Any]:
    summaries = [s[2] for s in shards]
    counts = run["counts"]
    # The shards ran side by side: the merged run took as long as the longest.
    elapsed = max(float(s.get("elapsed_s") or 0.0) for s in summaries)
    made = sum(c.get("made", 0) for c in calls.values())
    return {
        "run_id": out.name,
        "job": run["job"],
        "state": "succeeded" if all(s["state"] == "succeeded" for s in summaries)
        else "completed_with_failures",
        "rows_total": counts["rows_total"],
        "rows_rejected": counts["rows_rejected"],
        "rows_duplicate": counts["rows_duplicate"],
        "rows_blank": counts.get("rows_blank", 0),
        "items_total": counts["items_total"],
        "items_succeeded": succeeded,
        "items_failed": failed,
        "items_pending": counts["items_total"] - succeeded - failed,
        "items_warned": sum(int(s.get("items_warned") or 0) for s in summaries),
        "calls": calls,
        "started_at": min(s["started_at"] for s in summaries),
        "finished_at": max(s.get("finished_at") or "" for s in summaries) or iso(utc_now()),
        "elapsed_s": elapsed,
        "calls_per_s": round(made / elapsed, 2) if elapsed else 0.0,
        "run_dir": str(out),
        "note": f"merged from {len(shards)} shards",
    }
