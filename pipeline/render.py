"""Everything a run prints for people or machines: the closing report, ``status``, ``plan``,
and the line that says how to continue a stopped run. JSON off a TTY, a few lines on one."""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from typing import Any

from .rundir import RunDir

CONTINUABLE = ("interrupted", "deadline", "aborted")


def continue_command(summary: dict[str, Any]) -> str | None:
    """The exact command that continues a stopped run, or None when there is nothing to do."""
    if summary.get("state") not in CONTINUABLE or not summary.get("items_pending"):
        return None
    return f"connect-bulk resume {shlex.quote(str(summary['run_dir']))}"


def closing_line(summary: dict[str, Any], note: str) -> str:
    text = (f"{summary['state']}: {summary['items_succeeded']} succeeded, "
            f"{summary['items_failed']} failed, {summary['items_pending']} pending, "
            f"{summary['rows_rejected']} rejected, {summary['rows_duplicate']} duplicate rows")
    if summary.get("items_warned"):
        text += f", {summary['items_warned']} with warnings"
    return f"{text}; {note}" if note else text


def _counts(summary: dict[str, Any]) -> list[str]:
    """Items, rows and calls, as the closing report and ``status`` both show them."""
    lines = [] if "items_total" not in summary else [
        f"  items    {summary['items_total']}: {summary['items_succeeded']} succeeded, "
        f"{summary['items_failed']} failed, {summary['items_pending']} pending"
        + (f", {summary['items_warned']} with warnings" if summary.get("items_warned") else ""),
        f"  rows     {summary['rows_total']}: {summary['rows_rejected']} rejected, "
        f"{summary['rows_duplicate']} duplicates"
        + (f" ({summary['rows_blank']} blank rows skipped)" if summary.get("rows_blank") else ""),
    ]
    return lines + [f"  calls    {op}: {_calls(c)}"
                    for op, c in (summary.get("calls") or {}).items()]


def summary_lines(summary: dict[str, Any], rundir: RunDir) -> list[str]:
    lines = [
        f"{summary['state']} in {summary['elapsed_s']}s",
        *([f"  stopped  {summary['note']}"] if summary.get("note") else []),
        *_counts(summary),
    ]
    lines += [
        f"  results  {rundir.results}",
        f"  failures {rundir.failures}",
        f"  rejects  {rundir.rejects}",
    ]
    command = continue_command(summary)
    if command:
        lines.append(f"  continue {command}")
    return lines


def _calls(c: dict[str, int]) -> str:
    text = (f"{c['made']} made, {c['throttled']} throttled, {c['retried']} retried, "
            f"{c['errors']} errors")
    return text + (f", {c['not_found']} expected not-found" if c.get("not_found") else "")


def print_summary(summary: dict[str, Any], rundir: RunDir, log_format: str,
                  echo: Callable[[str], None]) -> None:
    """The closing report on stdout: JSON for machines, a few lines for people."""
    if log_format == "json":
        command = continue_command(summary)
        echo(json.dumps(summary | ({"continue_with": command} if command else {})))
        return
    echo("\n".join(summary_lines(summary, rundir)))


def status_lines(summary: dict[str, Any]) -> list[str]:
    lines = [
        f"{summary.get('run_id')}  {summary.get('job')}  {summary.get('state')}",
        f"  input    {summary['input']['path']} ({summary['input']['rows']} rows)",
    ]
    lines += _counts(summary)
    if summary.get("started_at"):
        lines.append(f"  timing   started {summary['started_at']}, finished "
                     f"{summary.get('finished_at') or '-'}, {summary.get('elapsed_s')}s "
                     f"working, {summary.get('calls_per_s')} calls/s")
    if summary.get("note"):
        lines.append(f"  note     {summary['note']}")
    command = continue_command(summary)
    if command:
        lines.append(f"  continue {command}")
    return lines


def plan_lines(report: dict[str, Any], rate: float) -> list[str]:
    lines = [
        f"{report['job']} plan for {report['input']}",
        f"  rows {report['rows_total']}: {report['items_total']} items, "
        f"{report['rows_duplicate']} duplicates, {report['rows_rejected']} rejected"
        + (f", {report['rows_blank']} blank skipped" if report.get("rows_blank") else ""),
        f"  instances {report['instances']}",
    ]
    lines += [f"  calls {operation}: {calls}" for operation, calls in report["calls"].items()]
    for scope in report["scopes"]:
        account = scope["account_id"] or "the credentials' account"
        where = f"{account} {scope['region'] or 'default region'}"
        lines.append(f"    {where}: {scope['items']} items in {scope['batches']} batches")
    lines.append(f"  estimated {report['estimated_s']}s at --rate {rate}")
    if report.get("shard"):
        lines[0] += f" (shard {report['shard']})"
    for shard in report.get("shards", []):
        lines.append(f"  shard {shard['shard']}: {shard['items']} items, {shard['calls']} "
                     f"calls, estimated {shard['estimated_s']}s")
        lines += [f"    {s['account_id'] or 'the credentials account'} "
                  f"{s['region'] or 'default region'}: {s['items']} items, {s['calls']} calls"
                  for s in shard["scopes"]]
    lines += [f"  reject row {r['input_row']}: {r['reason']}" for r in report["rejects"]]
    return lines
