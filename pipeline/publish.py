"""``--publish s3://bucket/prefix``: when an execution ends, the run's final files are
uploaded to ``s3://bucket/prefix/<run_id>/``, so that a container whose disk goes with it leaves
its outputs somewhere. The journal (``parts/``) stays local: a resume needs it, not a reader.

Uploads use the run's credentials (not the role of ``--role-arn-template``), region and
``--endpoint-url``; each file is written whole or not at all (S3 puts are atomic), and
``summary.json`` goes last, so that a reader who sees it sees the rest.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from . import signals
from .crashpoints import crashpoint
from .errors import PublishError, UsageError
from .rundir import RunDir

FILES = ("results.parquet", "failures.parquet", "rejects.parquet", "rollback.parquet",
         "run.json", "summary.json")
_TARGET = re.compile(r"^s3://([a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(.*))?$")


def parse_target(target: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` as (bucket, prefix without slashes at either end)."""
    match = _TARGET.match(target)
    if not match:
        raise UsageError(f"--publish {target!r}: give s3://BUCKET or s3://BUCKET/PREFIX")
    return match.group(1), (match.group(2) or "").strip("/")


def keys(rundir: RunDir, target: str) -> list[tuple[Path, str, str]]:
    """(file, bucket, key) of each final file the run has, ``summary.json`` last."""
    bucket, prefix = parse_target(target)
    folder = "/".join(p for p in (prefix, rundir.run_id) if p)
    return [(rundir.path / name, bucket, f"{folder}/{name}") for name in FILES
            if (rundir.path / name).is_file()]


async def _upload(files: list[tuple[Path, str, str]], settings: Any) -> bool:
    """Upload ``files`` in order; False when a stop signal ended it (no upload starts after
    one, and the one in flight is abandoned: S3 keeps no half object)."""
    import aioboto3
    import anyio
    from botocore.config import Config

    session = aioboto3.Session(profile_name=settings.profile)
    config = Config(retries={"mode": "standard", "max_attempts": 5},
                    connect_timeout=settings.connect_timeout_s,
                    read_timeout=settings.read_timeout_s)
    with anyio.CancelScope() as scope, signals.listening(lambda _signum: scope.cancel()):
        async with session.client("s3", region_name=settings.region or "us-east-1",
                                  endpoint_url=settings.endpoint_url, config=config) as s3:
            for path, bucket, key in files:
                crashpoint("publishing")
                await s3.upload_file(str(path), bucket, key)
    return not scope.cancelled_caught


def publish(rundir: RunDir, target: str, settings: Any) -> list[str]:
    """Upload the run's final files; returns their ``s3://`` addresses. Raises
    ``PublishError`` naming the first file that could not be uploaded and why."""
    import anyio
    from botocore.exceptions import BotoCoreError, ClientError

    files = keys(rundir, target)
    try:
        done = anyio.run(_upload, files, settings)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise PublishError(f"cannot publish to {target}: {error.get('Code')}: "
                           f"{error.get('Message')}; the run's files are in {rundir.path}, "
                           "and resume publishes them again") from exc
    except (BotoCoreError, OSError) as exc:
        raise PublishError(f"cannot publish to {target}: {exc}; the run's files are in "
                           f"{rundir.path}, and resume publishes them again") from exc
    if not done:
        interrupted = PublishError(f"publishing to {target} was interrupted; the run's files are "
                                   f"in {rundir.path}, and resume publishes them")
        interrupted.exit_code = 130
        raise interrupted
    return [f"s3://{bucket}/{key}" for _, bucket, key in files]
