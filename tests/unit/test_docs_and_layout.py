"""The README documents every command and job option; the engine names no Connect operation."""

from __future__ import annotations

import re
from pathlib import Path

import botocore.session

from jobs.campaign_onboarding import CampaignOnboarding
from jobs.flow_associations import FlowAssociations
from pipeline.cli import cli

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text()


def test_every_command_is_in_the_readme() -> None:
    for name in cli.commands:
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
