"""The CLI around the commands (issue 13): user modules on every command (`--import-modules`, `METARL_IMPORT`, entry
points), tables and pipes, `families --json`, help texts, counted nouns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from metarl import plugins, registry
from metarl.cli import COMMANDS, RAW_COMMANDS, describe, main

PLUGIN = "metarl_test_plugin_nav"
PLUGIN_ID = "test/PluginNav-v0"


def write_plugin(directory: Path, module: str, family_id: str, body: str = "") -> None:
    """A user module registering a PointNav copy under `family_id` (`body`: code run first)."""
    (directory / f"{module}.py").write_text(textwrap.dedent(f"""\
        import metarl
        {body}
        metarl.register(metarl.FamilySpec(id={family_id!r}, entry_point="metarl.envs.point_nav:PointNav",
                                          horizon=20))
        """))


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A module `PLUGIN` on sys.path, neither imported nor registered; forgotten again afterwards."""
    write_plugin(tmp_path, PLUGIN, PLUGIN_ID)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    forget(PLUGIN, PLUGIN_ID)


def forget(module: str, family_id: str) -> None:
    sys.modules.pop(module, None)
    if family_id in {s.id for s in registry.registered()}:
        registry.unregister(family_id)


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and out.startswith("error:") and "Traceback" not in out, out
    return out


# ----------------------------------------------------------------------------------------------- user modules
@pytest.mark.parametrize("command", sorted({*COMMANDS, *RAW_COMMANDS}))
def test_every_command_takes_import_modules(plugin: Path, command: str) -> None:
    assert main([command, "--import-modules", PLUGIN, "--help"]) == 0
    assert PLUGIN in sys.modules and PLUGIN_ID in {s.id for s in registry.registered()}


def test_imported_families_are_usable_by_the_command(plugin: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", "--family", PLUGIN_ID, "--tasks", "2", "--episodes", "1", "--repeats", "1",
                 f"--import-modules={PLUGIN}"]) == 0
    assert f"{PLUGIN_ID}: T=2" in capsys.readouterr().out


def test_modules_are_comma_separated_and_the_flag_repeats(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        write_plugin(tmp_path, f"{PLUGIN}{i}", f"test/PluginNav{i}-v0")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        assert main(["families", "--json", "--import-modules", f"{PLUGIN}0, {PLUGIN}1", "--import-modules",
                     f"{PLUGIN}2"]) == 0
        assert {f"test/PluginNav{i}-v0" for i in range(3)} <= {s.id for s in registry.registered()}
    finally:
        for i in range(3):
            forget(f"{PLUGIN}{i}", f"test/PluginNav{i}-v0")


def test_the_environment_variable_imports_for_every_command(plugin: Path, monkeypatch: pytest.MonkeyPatch,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(plugins.ENV_VAR, f" {PLUGIN} ,")
    assert main(["families", "--json"]) == 0
    assert PLUGIN_ID in [row["id"] for row in json.loads(capsys.readouterr().out)]


def test_an_unknown_family_names_the_ways_to_register_one(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sample", "--family", "my/Unknown-v0"]) == 2
    line = one_line(capsys)
    for way in ("no task family 'my/Unknown-v0'", "--import-modules MOD", "METARL_IMPORT=MOD", "metarl.families",
                "current directory"):
        assert way in line, (way, line)


def test_a_module_that_cannot_be_imported_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["families", "--import-modules", "metarl_no_such_module"]) == 2
    line = one_line(capsys)
    assert "cannot import 'metarl_no_such_module' (from --import-modules)" in line and "PYTHONPATH" in line
    write_plugin(tmp_path, "metarl_test_broken", "test/Broken-v0", body="raise ValueError('bad family')")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv(plugins.ENV_VAR, "metarl_test_broken")
    try:
        assert main(["families"]) == 2
        line = one_line(capsys)
        assert "(from $METARL_IMPORT)" in line and "ValueError: bad family (metarl_test_broken.py:2)" in line
    finally:
        forget("metarl_test_broken", "test/Broken-v0")
    assert main(["families", "--import-modules"]) == 2
    assert "--import-modules needs a value" in one_line(capsys)


def test_a_failing_entry_point_names_its_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    write_plugin(tmp_path, "metarl_test_broken_ep", "test/BrokenEp-v0", body="raise RuntimeError('boom')")
    monkeypatch.syspath_prepend(str(tmp_path))
    entry = importlib.metadata.EntryPoint("broken", "metarl_test_broken_ep", plugins.ENTRY_POINT_GROUP)
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda group: [entry] if group == entry.group else [])
    try:
        with pytest.raises(plugins.PluginError) as raised:
            plugins.load_entry_points()
        assert "entry point broken = 'metarl_test_broken_ep'" in str(raised.value)
        assert "RuntimeError: boom" in str(raised.value)
    finally:
        forget("metarl_test_broken_ep", "test/BrokenEp-v0")


def metarl_command() -> list[str]:
    """The console script (which, unlike `python -m`, does not put the current directory on sys.path itself)."""
    script = Path(sys.executable).with_name("metarl")
    return [str(script)] if script.exists() else [sys.executable, "-m", "metarl"]


def test_entry_points_the_environment_and_the_current_directory_in_a_fresh_process(tmp_path: Path) -> None:
    """An installed package's `metarl.families` entry point (a dist-info on PYTHONPATH: what pip writes), a module
    from METARL_IMPORT, and a module in the current directory named by --import-modules, all in one command."""
    site, cwd = tmp_path / "site", tmp_path / "work"
    site.mkdir()
    cwd.mkdir()
    write_plugin(site, "metarl_test_ep", "test/EntryNav-v0")
    write_plugin(site, "metarl_test_env", "test/EnvNav-v0")
    write_plugin(cwd, "metarl_test_cwd", "test/CwdNav-v0")
    dist = site / "metarl_test_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: metarl-test-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(f"[{plugins.ENTRY_POINT_GROUP}]\nnav = metarl_test_ep\n")
    env = {**os.environ, "PYTHONPATH": str(site), plugins.ENV_VAR: "metarl_test_env"}
    result = subprocess.run([*metarl_command(), "families", "--json", "--import-modules", "metarl_test_cwd"], cwd=cwd,
                            env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    ids = {row["id"] for row in json.loads(result.stdout)}
    assert {"test/EntryNav-v0", "test/EnvNav-v0", "test/CwdNav-v0", "PointNav-v0"} <= ids


# ----------------------------------------------------------------------------------------------- output
def test_families_json_is_the_registry(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["families", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [row["id"] for row in rows] == [s.id for s in registry.registered()]
    point = next(row for row in rows if row["id"] == "PointNav-v0")
    assert (point["obs_dim"], point["act_dim"], point["horizon"]) == (2, 2, 100)
    assert point["entry_point"] == registry.spec("PointNav-v0").entry_point


def test_a_piped_table_keeps_ids_whole(capsys: pytest.CaptureFixture[str]) -> None:
    """Captured stdout is not a terminal: rich would fold "HalfCheetahUphill-v0" at 80 columns."""
    assert main(["families"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("│")]
    assert len(rows) == len(registry.registered())  # one line per family: nothing wrapped
    for spec in registry.registered():
        assert any(line.startswith(f"│ {spec.id} ") for line in rows), spec.id


@pytest.mark.parametrize("argv", [["families"], ["train", "maml", "--help"]])
def test_a_closed_pipe_ends_quietly(argv: list[str]) -> None:
    """`metarl families | head -1`: the reader is gone before metarl writes; no BrokenPipeError traceback."""
    read, write = os.pipe()
    os.close(read)
    try:
        result = subprocess.run([sys.executable, "-m", "metarl", *argv], stdout=write, stderr=subprocess.PIPE,
                                text=True, timeout=300)
    finally:
        os.close(write)
    assert result.returncode == 141 and result.stderr == "", result.stderr


def test_train_help_lists_preset_resume_and_import_modules(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "maml", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--preset NAME", "--resume RUN_DIR", "--run.iterations", "--import-modules MOD", "fast"):
        assert flag in out, flag
    assert main(["baseline", "--help"]) == 0
    assert "--import-modules" in capsys.readouterr().out


def test_one_episode_is_singular() -> None:
    record = {"label": "maml, PointNav-v0, seed 0", "protocol": {"tasks": 1, "seed": 0, "episodes": 1,
                                                                 "checkpoint": "best.pt", "iteration": 3}}
    assert describe(record) == "maml, PointNav-v0, seed 0: 1 test task (seed 0), 1 episode per step, best.pt at " \
                               "iteration 3"
    record["protocol"] |= {"tasks": 40, "episodes": 2}
    assert "40 test tasks (seed 0), 2 episodes per step" in describe(record)
