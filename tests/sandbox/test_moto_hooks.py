"""The sandbox extends moto at two places. If a moto upgrade moves either, these fail first and
say which, instead of every sandbox test failing with a 404 or a 500."""

from __future__ import annotations

import inspect
import socket
from importlib.metadata import version

import boto3
import moto.connect.urls
import moto.connectcampaigns.urls
import pytest
from connect_bulk.pipeline.sandbox import SandboxServer, server
from connect_bulk.pipeline.sandbox.campaigns import URL_PATHS as CAMPAIGN_PATHS
from connect_bulk.pipeline.sandbox.connect_responses import URL_PATHS as CONNECT_PATHS
from moto.moto_server.threaded_moto_server import ThreadedMotoServer

from tests.conftest import CREDENTIALS


def test_moto_is_inside_the_pinned_range() -> None:
    major, minor, *_ = (int(part) for part in version("moto").split(".")[:2])
    assert (major, minor) == (5, 2), (
        "pyproject.toml pins moto to 5.2.x because the sandbox patches its URL maps and "
        "server entry; re-check tests/sandbox before widening the pin"
    )


def test_url_maps_are_module_level_dicts_that_moto_reads() -> None:
    # Hook 1: moto builds each service's Flask app from moto.<service>.urls.url_paths.
    assert isinstance(moto.connect.urls.url_paths, dict), "moto.connect.urls.url_paths moved"
    assert isinstance(moto.connectcampaigns.urls.url_paths, dict), (
        "moto.connectcampaigns.urls.url_paths moved"
    )
    assert "url_paths" in inspect.getsource(
        __import__("moto.core.base_backend", fromlist=["BaseBackend"]).BaseBackend
    ), "BaseBackend no longer reads url_paths"
    server.install()
    for path in CONNECT_PATHS:
        assert moto.connect.urls.url_paths[path] is CONNECT_PATHS[path]
    for path in CAMPAIGN_PATHS:
        assert moto.connectcampaigns.urls.url_paths[path] is CAMPAIGN_PATHS[path]


def test_threaded_moto_server_still_starts_through_server_entry() -> None:
    # Hook 2: SandboxServer overrides ThreadedMotoServer._server_entry, which start() runs.
    assert callable(getattr(ThreadedMotoServer, "_server_entry", None)), (
        "ThreadedMotoServer._server_entry moved"
    )
    assert "_server_entry" in inspect.getsource(ThreadedMotoServer.start)
    entry = inspect.getsource(ThreadedMotoServer._server_entry)
    for name in ("DomainDispatcherApplication", "_server_ready_event"):
        assert name in entry, f"ThreadedMotoServer._server_entry no longer uses {name}"


def test_an_in_process_sandbox_serves_the_added_operations() -> None:
    with SandboxServer() as sandbox:
        connect = boto3.client("connect", endpoint_url=sandbox.url, region_name="us-east-1",
                               **CREDENTIALS)
        instance = connect.create_instance(IdentityManagementType="CONNECT_MANAGED",
                                           InboundCallsEnabled=True, OutboundCallsEnabled=True)
        number = connect.claim_phone_number(TargetArn=instance["Arn"], PhoneNumber="+15550400000")
        listed = connect.list_phone_numbers_v2(InstanceId=instance["Id"])
        assert [n["PhoneNumberId"] for n in listed["ListPhoneNumbersSummaryList"]] == [
            number["PhoneNumberId"]
        ]
        assert sandbox.injector.stats()["calls"]["ClaimPhoneNumber"] == 1


def test_an_in_process_sandbox_stops_when_its_trigger_is_gone() -> None:
    # The server's loop is woken through its trigger's pipe to close what it serves; when
    # that pipe is closed already, stopping closes it all from the stopping thread instead.
    sandbox = SandboxServer()
    sandbox.start()
    connect = boto3.client("connect", endpoint_url=sandbox.url, region_name="us-east-1",
                           **CREDENTIALS)
    connect.list_instances()
    address = sandbox.get_host_and_port()
    sandbox._waitress.trigger.close()
    sandbox.stop()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=5).close()
