"""Every notebook runs top to bottom against runs made on the sandbox, and shows a chart; the
committed notebooks carry no outputs."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from tests.cli.world import build_world, write_csv
from tests.conftest import Sandbox, run_cli

ROOT = Path(__file__).parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _execute(path: Path, monkeypatch: pytest.MonkeyPatch, **env: str) -> nbformat.NotebookNode:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(ROOT)}}).execute()
    return notebook


def _charts(notebook: nbformat.NotebookNode) -> int:
    return sum("image/png" in output.get("data", {})
               for cell in notebook.cells if cell.cell_type == "code"
               for output in cell.get("outputs", []))


@pytest.fixture
def runs(sandbox: Sandbox, tmp_path: Path) -> dict[str, Path]:
    world = build_world(sandbox, instances=2, numbers_per_instance=20)
    arns = {i["Id"]: i["Arn"] for i in world.instances}
    flows = write_csv(tmp_path / "flows.csv", ["instance_id", "phone_number"],
                      [[arns[n.instance_id], n.id] for n in world.numbers] + [["bad", "bad"]])
    out = tmp_path / "runs"

    def run(job: str, path: Path, run_id: str, *extra: str) -> Path:
        result = run_cli("run", job, str(path), "--endpoint-url", sandbox.url, "--out", str(out),
                         "--run-id", run_id, "--rate", "50", *extra)
        assert result.returncode in (0, 1), result.stderr
        return out / run_id

    first = run("flow-associations", flows, "nightly-1")
    connect = sandbox.client("connect")
    number = world.numbers[1]
    connect.disassociate_phone_number_contact_flow(PhoneNumberId=number.id,
                                                   InstanceId=number.instance_id)
    second = run("flow-associations", flows, "nightly-2")
    instances = write_csv(tmp_path / "instances.csv", ["instance_id"],
                          [[i["Arn"]] for i in world.instances]
                          + [["00000000-0000-4000-8000-000000000000"]])
    onboarding = run("campaign-onboarding", instances, "onboarding", "--yes", "--no-encryption",
                     "--region", "us-east-1")
    return {"flows": second, "first": first, "onboarding": onboarding, "all": out}


def test_the_notebooks_are_there() -> None:
    assert [p.name for p in NOTEBOOKS] == ["campaign-onboarding-report.ipynb",
                                           "flow-associations-report.ipynb",
                                           "nightly-drift.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, path.name


def test_every_notebook_runs_and_draws(runs: dict[str, Path],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    flow = _execute(ROOT / "notebooks" / "flow-associations-report.ipynb", monkeypatch,
                    CONNECT_BULK_RUN_DIR=str(runs["flows"]))
    assert _charts(flow) >= 2
    onboarding = _execute(ROOT / "notebooks" / "campaign-onboarding-report.ipynb", monkeypatch,
                          CONNECT_BULK_RUN_DIR=str(runs["onboarding"]))
    assert _charts(onboarding) >= 1
    drift = _execute(ROOT / "notebooks" / "nightly-drift.ipynb", monkeypatch,
                     CONNECT_BULK_RUNS=str(runs["all"]))
    assert _charts(drift) >= 1
    table = next(o for c in drift.cells if c.cell_type == "code" for o in c.get("outputs", [])
                 if "removed" in str(o.get("data", {}).get("text/plain", "")))
    assert table  # the drift table, with the removed association of the second night
