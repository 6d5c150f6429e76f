"""What an install claims: one top-level namespace, no moto unless asked for, and the
sandbox's commands saying so in one line without it."""

from __future__ import annotations

import email
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import CLI, cli_env

ROOT = Path(__file__).parents[2]


def test_the_wheel_holds_one_namespace_and_no_moto_unless_asked(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(tmp_path), str(ROOT)], check=True, timeout=300,
                   capture_output=True)
    (wheel,) = tmp_path.glob("connect_bulk-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = email.message_from_bytes(archive.read(next(
            n for n in names if n.endswith(".dist-info/METADATA"))))
    tops = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(
        ".dist-info")}
    assert tops == {"connect_bulk"}
    assert "connect_bulk/jobs/flow_associations.py" in names
    assert "connect_bulk/pipeline/sandbox/server.py" in names
    requires = metadata.get_all("Requires-Dist") or []
    base = [r for r in requires if "extra ==" not in r]
    assert not [r for r in base if r.startswith("moto")], base
    assert any(r.startswith("moto") and 'extra == "sandbox"' in r for r in requires)


@pytest.mark.parametrize("command", [["sandbox", "--port", "0"], ["demo", "--rows", "3"]])
def test_without_the_sandbox_extra_its_commands_say_so_in_one_line(
    tmp_path: Path, command: list[str]
) -> None:
    # moto made unimportable, as in an install without the extra
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['moto'] = None\n")
    result = subprocess.run([*CLI, *command], capture_output=True, text=True, timeout=60,
                            env=cli_env(PYTHONPATH=str(tmp_path)), stdin=subprocess.DEVNULL)
    assert result.returncode == 2
    (line,) = result.stderr.splitlines()
    assert "pip install 'connect-bulk[sandbox]'" in json.loads(line)["message"]


def test_a_broken_install_is_one_line_not_a_traceback(tmp_path: Path) -> None:
    # polars made unimportable: the jobs cannot load, outside any command's own error edge.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['polars'] = None\n")
    for command in (["jobs"], ["run", "flow-associations", "--help"]):
        result = subprocess.run([*CLI, *command], capture_output=True, text=True, timeout=60,
                                env=cli_env(PYTHONPATH=str(tmp_path)), stdin=subprocess.DEVNULL)
        assert result.returncode == 3, command
        assert "Traceback" not in result.stderr
        (line,) = result.stderr.splitlines()
        assert "polars" in json.loads(line)["message"]
