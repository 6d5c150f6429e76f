"""Every notebook runs top to bottom against runs of its job made on the sandbox (an
interrupted one among them), and every chart it draws is titled, has both axes labelled and
names things as an administrator knows them (no ID prefixes): read from the figure objects
(``charts.show`` writes what each says) before they are saved. The committed notebooks carry no
outputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

from tests.cli.world import FLOW, World, build_world, write_csv
from tests.conftest import Sandbox, run_cli

ROOT = Path(__file__).parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
UUID_PREFIX = re.compile(r"^[0-9a-f]{8}(-|$)")


def _execute(path: Path, monkeypatch: pytest.MonkeyPatch, cwd: Path = ROOT,
             **env: str) -> nbformat.NotebookNode:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("PWD", str(cwd))
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(notebook, timeout=120, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return notebook


def _figures(folder: Path) -> dict[str, list[dict[str, object]]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _check(figures: dict[str, list[dict[str, object]]], expected: set[str]) -> None:
    assert set(figures) >= expected, figures.keys()
    for name, axes in figures.items():
        for ax in axes:
            assert ax["title"], (name, "no title")
            assert ax["xlabel"] and ax["ylabel"], (name, "an axis without a label")
            ticks = [str(t) for t in [*ax["xticks"], *ax["yticks"]]]  # type: ignore[misc]
            assert not [t for t in ticks if UUID_PREFIX.match(t)], (name, ticks)
            assert not [t for t in ax["xticks"] if re.fullmatch(r"\d+\.5", str(t))]  # type: ignore[union-attr]


def _run(sandbox: Sandbox, out: Path, job: str, path: Path, run_id: str, *extra: str) -> Path:
    result = run_cli("run", job, str(path), "--endpoint-url", sandbox.url, "--out", str(out),
                     "--run-id", run_id, "--rate", "50", "--region", "us-east-1", "--yes", *extra)
    assert result.returncode in (0, 1, 4), result.stderr
    return out / run_id


@pytest.fixture
def world(sandbox: Sandbox) -> World:
    return build_world(sandbox, instances=2, numbers_per_instance=20)


def _numbers_csv(world: World, path: Path) -> Path:
    arns = {i["Id"]: i["Arn"] for i in world.instances}
    return write_csv(path, ["instance_id", "phone_number"],
                     [[arns[n.instance_id], n.id] for n in world.numbers] + [["bad", "bad"]])


def test_the_notebooks_are_there() -> None:
    assert [p.name for p in NOTEBOOKS] == ["associate-flows-report.ipynb",
                                           "campaign-onboarding-report.ipynb",
                                           "flow-associations-report.ipynb",
                                           "nightly-drift.ipynb"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path: Path) -> None:
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, path.name


def test_the_run_reports_draw_named_labelled_charts(
    sandbox: Sandbox, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "runs"
    numbers = _numbers_csv(world, tmp_path / "numbers.csv")
    # An interrupted flow-associations run: its chart of calls over time has a gap.
    stopped = _run(sandbox, out, "flow-associations", numbers, "flows", "--rate", "1",
                   "--burst", "1", "--deadline", "2s")
    run_cli("resume", str(stopped))
    instances = write_csv(tmp_path / "instances.csv", ["instance_id"],
                          [[i["Arn"]] for i in world.instances]
                          + [["00000000-0000-4000-8000-000000000000"]])
    onboarding = _run(sandbox, out, "campaign-onboarding", instances, "onboarding",
                      "--no-encryption")
    connect = sandbox.client("connect")
    rows = []
    for instance in world.instances:
        connect.create_contact_flow(InstanceId=instance["Id"], Name="New IVR",
                                    Type="CONTACT_FLOW", Content=FLOW)
        rows += [[instance["Arn"], n.id, "New IVR"] for n in world.of(instance)[:10]]
    migration = _run(sandbox, out, "associate-flows",
                     write_csv(tmp_path / "map.csv", ["instance_id", "phone_number", "flow"],
                               rows), "migration")
    for name, run_dir, expected in (
        ("flow-associations-report", stopped, {"outcomes", "flows", "failures", "rates"}),
        ("campaign-onboarding-report", onboarding, {"outcomes", "failures", "rates"}),
        ("associate-flows-report", migration, {"before-after", "outcomes", "failures",
                                               "rates"}),
    ):
        figures = tmp_path / "figures" / name
        # The run named relative to where the user started Jupyter, not to notebooks/.
        _execute(ROOT / "notebooks" / f"{name}.ipynb", monkeypatch, cwd=tmp_path,
                 CONNECT_BULK_RUN_DIR=str(run_dir.relative_to(tmp_path)),
                 CONNECT_BULK_FIGURES_DIR=str(figures))
        drawn = _figures(figures)
        _check(drawn, expected)
        assert list((figures).glob("*.png"))
    # Instances by their aliases (w0, w1), flows by their names.
    outcomes = _figures(tmp_path / "figures" / "flow-associations-report")["outcomes"][0]
    assert set(outcomes["yticks"]) == {"w0", "w1"}  # type: ignore[arg-type]
    flows = _figures(tmp_path / "figures" / "flow-associations-report")["flows"][0]
    assert set(flows["yticks"]) == {f"w{i} · Flow {f}" for i in (0, 1) for f in (0, 1)}  # type: ignore[arg-type]


def test_a_run_of_another_job_is_said_in_one_line(
    sandbox: Sandbox, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run_dir = _run(sandbox, tmp_path / "runs", "flow-associations",
                   _numbers_csv(world, tmp_path / "numbers.csv"), "flows")
    with pytest.raises(CellExecutionError) as raised:
        _execute(ROOT / "notebooks" / "campaign-onboarding-report.ipynb", monkeypatch,
                 CONNECT_BULK_RUN_DIR=str(run_dir))
    assert "flows is a flow-associations run; this notebook reads campaign-onboarding runs" \
        in str(raised.value)


def test_drift_over_three_nights_compares_one_input_and_skips_the_others(
    sandbox: Sandbox, world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "runs"
    numbers = _numbers_csv(world, tmp_path / "numbers.csv")
    _run(sandbox, out, "flow-associations", numbers, "nightly-1")
    number = world.numbers[1]
    sandbox.client("connect").disassociate_phone_number_contact_flow(
        PhoneNumberId=number.id, InstanceId=number.instance_id)
    _run(sandbox, out, "flow-associations", numbers, "nightly-2")
    # The third night stopped at its deadline: its missing numbers are not removals.
    _run(sandbox, out, "flow-associations", numbers, "nightly-3", "--rate", "1", "--burst",
         "1", "--concurrency", "1", "--deadline", "1s")
    other = write_csv(tmp_path / "other.csv", ["instance_id", "phone_number"],
                      [[world.instances[0]["Arn"], world.numbers[0].id]])
    _run(sandbox, out, "flow-associations", other, "unrelated")
    (out / "unrelated" / "run.json").write_text(
        (out / "unrelated" / "run.json").read_text().replace(
            '"created_at": "', '"created_at": "0'))  # older than the nights
    figures = tmp_path / "figures"
    drift = _execute(ROOT / "notebooks" / "nightly-drift.ipynb", monkeypatch,
                     CONNECT_BULK_RUNS=str(out), CONNECT_BULK_FIGURES_DIR=str(figures))
    printed = "".join(o.get("text", "") for c in drift.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    assert "3 runs of one input" in printed and "skipped unrelated: another input" in printed
    table = next(str(o["data"]["text/plain"]) for c in drift.cells if c.cell_type == "code"
                 for o in c.get("outputs", []) if "removed" in str(o.get("data", {})))
    assert table
    _check(_figures(figures), {"drift"})
    night3 = json.loads((out / "nightly-3" / "summary.json").read_text())
    assert night3["items_pending"] > 0  # partial: compared only where it answered


def test_notebooks_are_copied_out_of_an_install(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "connect_bulk.pipeline", "notebooks",
                             str(tmp_path / "nb")], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    copied = sorted(p.name for p in (tmp_path / "nb").glob("*.ipynb"))
    assert copied == [p.name for p in NOTEBOOKS]
    assert "jupyter lab" in result.stdout


@pytest.mark.slow
def test_an_install_without_the_clone_copies_and_runs_its_notebooks(
    sandbox: Sandbox, world: World, tmp_path: Path
) -> None:
    """pip install of the package into a fresh venv, `connect-bulk notebooks`, a run made by
    that install, and the copied notebook executed against it from where the user works."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, str(ROOT), "matplotlib", "nbclient", "nbformat", "ipykernel"],
                   check=True, timeout=900, capture_output=True)
    tool = str(venv / "bin" / "connect-bulk")
    work = tmp_path / "work"
    work.mkdir()
    copied = subprocess.run([tool, "notebooks", "nb"], cwd=work, capture_output=True,
                            text=True, timeout=60)
    assert copied.returncode == 0, copied.stderr
    numbers = _numbers_csv(world, work / "numbers.csv")
    env = {"AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "x", "PATH": "/usr/bin:/bin",
           "AWS_CONFIG_FILE": "/dev/null", "AWS_SHARED_CREDENTIALS_FILE": "/dev/null"}
    made = subprocess.run([tool, "run", "flow-associations", str(numbers), "--endpoint-url",
                           sandbox.url, "--run-id", "r"], cwd=work, capture_output=True,
                          text=True, timeout=120, env=env)
    assert made.returncode in (0, 1), made.stderr
    script = ("import nbformat\nfrom nbclient import NotebookClient\n"
              "nb = nbformat.read('nb/flow-associations-report.ipynb', as_version=4)\n"
              "NotebookClient(nb, timeout=120, kernel_name='python3',\n"
              "               resources={'metadata': {'path': 'nb'}}).execute()\n")
    executed = subprocess.run(
        [str(venv / "bin" / "python"), "-c", script], cwd=work, capture_output=True, text=True,
        timeout=300, env=env | {"PWD": str(work), "CONNECT_BULK_RUN_DIR": "data/runs/r",
                               "CONNECT_BULK_FIGURES_DIR": str(work / "figures")})
    assert executed.returncode == 0, executed.stderr[-2000:]
    _check(_figures(work / "figures"), {"outcomes", "flows", "failures", "rates"})
