"""The README documents every command and job option; the engine names no Connect operation."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import botocore.session
import click
from connect_bulk.jobs.campaign_onboarding import CampaignOnboarding
from connect_bulk.jobs.flow_associations import FlowAssociations
from connect_bulk.pipeline.cli import cli

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()


def test_every_command_is_in_the_readme() -> None:
    with click.Context(cli) as ctx:
        names = cli.list_commands(ctx)
    assert {"run", "resume", "show", "diff", "sandbox"} <= set(names)
    for name in names:
        assert f"connect-bulk {name}" in README, name


def test_every_job_option_is_in_the_readme() -> None:
    for job in (FlowAssociations, CampaignOnboarding):
        for option in job.cli_options():
            assert option.opts[0] in README, option.opts[0]


def test_the_engine_names_no_connect_operation() -> None:
    session = botocore.session.get_session()
    operations = set()
    for service in ("connect", "connectcampaigns", "connectcampaignsv2"):
        operations |= set(session.get_service_model(service).operation_names)
    engine = list((ROOT / "pipeline").glob("*.py"))
    assert engine
    for path in engine:
        words = set(re.findall(r"[A-Z][A-Za-z0-9]+", path.read_text()))
        assert not words & operations, (path.name, words & operations)


ENGINE = list((ROOT / "pipeline").glob("*.py"))


def test_the_engine_imports_no_job_and_names_none() -> None:
    from connect_bulk.pipeline.job import job_names

    names = set(job_names())
    names |= {n.replace("-", "_") for n in names}
    names |= {"".join(w.title() for w in n.split("_")) for n in names if "_" in n}
    for path in ENGINE:
        text = path.read_text()
        for node in ast.walk(ast.parse(text)):
            # the package itself may be listed (job discovery); no job module is imported
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("connect_bulk.jobs"), (path, node.module)
        found = {name for name in names if name in text}
        assert not found, (path.name, found)


def test_no_top_level_pipeline_or_jobs_import_anywhere() -> None:
    # The installed names are connect_bulk.pipeline and connect_bulk.jobs; a bare `pipeline`
    # would be a second copy of every module (and its classes) under another name.
    for path in [*ROOT.glob("pipeline/**/*.py"), *ROOT.glob("jobs/*.py"),
                 *ROOT.glob("tests/**/*.py")]:
        assert "-m " + "pipeline" not in path.read_text(), path
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                assert node.module.split(".")[0] not in ("pipeline", "jobs"), (path, node.module)
            if isinstance(node, ast.Import):
                for alias in node.names:
                    assert alias.name.split(".")[0] not in ("pipeline", "jobs"), path


def test_modules_and_functions_stay_small() -> None:
    for path in [*ROOT.glob("pipeline/**/*.py"), *ROOT.glob("jobs/*.py")]:
        text = path.read_text()
        assert len(text.splitlines()) <= 420, path
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                assert length <= 65, (path.name, node.name, length)


def test_no_private_attribute_of_another_library() -> None:
    # aiolimiter's bucket and botocore's session have public ways in; the sandbox's pinned moto
    # hooks (tests/sandbox/test_moto_hooks.py) are the one exception.
    private = ("._leak", "._rate_per_sec", "._level", "._credentials", "._server_entry")
    for path in [*ROOT.glob("pipeline/*.py"), *ROOT.glob("jobs/*.py")]:
        text = path.read_text()
        assert not [p for p in private if p in text], path
