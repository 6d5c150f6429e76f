"""Runs of one host count each other per quota through their files in the state directory."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from connect_bulk.pipeline.peers import Peers

QUOTA = ("BatchGetFlowAssociation", "111122223333", "us-east-1")
OTHER = ("BatchGetFlowAssociation", "111122223333", "eu-west-2")


def test_runs_that_spend_one_quota_count_each_other_until_one_leaves(tmp_path: Path) -> None:
    first, second = Peers(tmp_path, None), Peers(tmp_path, None)
    assert first.beat({QUOTA: 2.0}) == {QUOTA: (1, 0.0)}
    assert second.beat({QUOTA: 0.5, OTHER: 3.0}) == {QUOTA: (2, 2.0), OTHER: (1, 0.0)}
    assert first.beat({QUOTA: 1.5}) == {QUOTA: (2, 0.5)}
    assert second.beat({QUOTA: 1.0}) == {QUOTA: (2, 1.5)}
    second.leave()
    assert first.beat({QUOTA: 1.5}) == {QUOTA: (1, 0.0)}
    assert list((tmp_path / "runs").iterdir()) == [first.path]
    first.leave()
    assert list((tmp_path / "runs").iterdir()) == []


def test_a_quota_not_spent_lately_is_not_counted(tmp_path: Path) -> None:
    """A run between phases names no quota: the runs that call have it to themselves."""
    first, second = Peers(tmp_path, None), Peers(tmp_path, None)
    second.beat({QUOTA: 1.0})
    assert first.beat({QUOTA: 1.0}) == {QUOTA: (2, 1.0)}
    second.beat({})
    assert first.beat({QUOTA: 1.0}) == {QUOTA: (1, 0.0)}


def test_another_endpoint_is_another_quota(tmp_path: Path) -> None:
    Peers(tmp_path, "http://127.0.0.1:5000").beat({QUOTA: 1.0})
    assert Peers(tmp_path, None).beat({QUOTA: 1.0}) == {QUOTA: (1, 0.0)}
    assert Peers(tmp_path, "http://127.0.0.1:5000").beat({QUOTA: 1.0}) == {QUOTA: (2, 1.0)}


def test_a_run_that_was_killed_stops_counting_then_its_file_goes(tmp_path: Path) -> None:
    killed, alive = Peers(tmp_path, None), Peers(tmp_path, None)
    killed.beat({QUOTA: 1.0})  # then SIGKILL: nobody removes its file
    assert alive.beat({QUOTA: 1.0}) == {QUOTA: (2, 1.0)}
    now = time.time()
    os.utime(killed.path, (now - Peers.LIVE_S - 1, now - Peers.LIVE_S - 1))
    assert alive.beat({QUOTA: 1.0}) == {QUOTA: (1, 0.0)}
    assert killed.path.exists()
    os.utime(killed.path, (now - Peers.FORGET_S - 1, now - Peers.FORGET_S - 1))
    assert alive.beat({QUOTA: 1.0}) == {QUOTA: (1, 0.0)}
    assert not killed.path.exists()


def test_a_beat_keeps_the_file_fresh_and_writes_it_again_if_it_went(tmp_path: Path) -> None:
    run, other = Peers(tmp_path, None), Peers(tmp_path, None)
    run.beat({QUOTA: 1.0})
    old = time.time() - Peers.LIVE_S - 1
    os.utime(run.path, (old, old))
    run.beat({QUOTA: 1.0})
    assert other.beat({QUOTA: 1.0}) == {QUOTA: (2, 1.0)}
    run.path.unlink()  # a clean-up of the folder under a live run
    run.beat({QUOTA: 1.0})
    assert json.loads(run.path.read_text())["quotas"] == {" ".join(("aws", *QUOTA)): 1.0}


@pytest.mark.parametrize("content", ["not json", '["a list"]', '{"quotas": "a string"}',
                                     '{"quotas": {"aws BatchGetFlowAssociation 111122223333 '
                                     'us-east-1": "fast"}}'])
def test_a_file_that_is_not_a_run_is_passed_over(tmp_path: Path, content: str) -> None:
    run = Peers(tmp_path, None)
    run.beat({QUOTA: 1.0})
    (tmp_path / "runs" / "stray.json").write_text(content)
    assert run.beat({QUOTA: 1.0}) == {QUOTA: (1, 0.0)}


def test_a_folder_that_cannot_be_written_says_so(tmp_path: Path) -> None:
    (tmp_path / "runs").write_text("a file where the folder goes")
    with pytest.raises(OSError):
        Peers(tmp_path, None).beat({QUOTA: 1.0})
