"""The `audience` command and the scripts: help, bad input, screening lists, status."""
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline import cli
from pipeline.screenings import read_screening_list, register, session_offset_s
from pipeline.stages import STAGE_SPECS
from pipeline.store import DataError, Workspace

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p for p in (REPO / "scripts").glob("*.py"))
COMMANDS = list(STAGE_SPECS) + ["run", "status", "demo", "train-detector", "make-detector-xml",
                                "capture", "inspect", "train", "evaluate", "report", "label-frames", "export-faces"]


def run_cli(args, capsys):
    code = cli.main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for command in COMMANDS:
        assert command in text


@pytest.mark.parametrize("command", COMMANDS)
def test_every_subcommand_has_useful_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main([command, "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    assert f"audience {command}" in text and "section.key=value" in text and "--workspace" in text


def test_every_script_has_help():
    # one interpreter for all scripts keeps this quick: each is run as __main__ with --help
    runner = ("import runpy, sys\n"
              "for path in sys.argv[1:]:\n"
              "    sys.argv = [path, '--help']\n"
              "    try:\n"
              "        runpy.run_path(path, run_name='__main__')\n"
              "    except SystemExit as e:\n"
              "        assert e.code in (0, None), (path, e.code)\n"
              "    print('HELP-OK', path, flush=True)\n")
    result = subprocess.run([sys.executable, "-c", runner, *map(str, SCRIPTS)], capture_output=True,
                            text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("HELP-OK") == len(SCRIPTS)
    assert result.stdout.count("usage:") >= len(SCRIPTS)


def test_unknown_config_key_is_a_clear_error(tmp_path, capsys):
    code, _, err = run_cli(["status", "--workspace", str(tmp_path), "detect.treshold=0.3"], capsys)
    assert code == cli.EXIT_USER_ERROR
    assert "treshold" in err and "threshold" in err


def test_missing_screening_list_is_a_clear_error(tmp_path, capsys):
    code, _, err = run_cli(["run", "--workspace", str(tmp_path), "--screenings", str(tmp_path / "nope.yaml")],
                           capsys)
    assert code == cli.EXIT_USER_ERROR and "screening list not found" in err


def test_status_of_an_empty_workspace(tmp_path, capsys):
    code, out, _ = run_cli(["status", "--workspace", str(tmp_path)], capsys)
    assert code == 0
    for stage in STAGE_SPECS:
        assert stage in out


def test_models_protocol_names_match_the_evaluator():
    from models import cli as models_cli
    from models.evaluate import PROTOCOLS

    assert models_cli.PROTOCOLS == PROTOCOLS


# ----------------------------------------------------------------------------- screening lists


def write_list(path: Path, entries) -> Path:
    path.write_text(yaml.safe_dump({"screenings": entries}))
    return path


def test_screening_list_registers_recordings_and_offsets(tmp_path):
    video = tmp_path / "rec.mp4"
    video.write_bytes(b"not decoded here")
    listing = write_list(tmp_path / "s.yaml", [
        {"movie": "m", "session": "s1", "camera": "cam0", "path": "rec.mp4", "offset_s": 12.5},
        {"movie": "m", "session": "s1", "camera": "cam1", "path": str(video), "offset_s": 12.5}])
    ws = Workspace(tmp_path / "ws")
    linked = register(read_screening_list(listing), ws)
    assert [p.name for p in linked] == ["cam0.mp4", "cam1.mp4"]
    assert all(p.resolve() == video.resolve() for p in linked)
    assert session_offset_s(ws, "m", "s1") == 12.5
    register(read_screening_list(listing), ws)           # registering again is harmless


def test_screening_list_problems_are_all_named(tmp_path):
    listing = write_list(tmp_path / "s.yaml", [
        {"movie": "m", "session": "s1", "camera": "cam0", "path": "missing.mp4"},
        {"movie": "m", "camera": "cam0", "path": "x.mp4"},
        {"movie": "m", "session": "s2", "camera": "cam0", "path": "x.mp4", "ofset_s": 1}])
    with pytest.raises(DataError) as err:
        read_screening_list(listing)
    text = str(err.value)
    assert "recording not found" in text and "missing session" in text and "ofset_s" in text


def test_two_offsets_for_one_session_are_refused(tmp_path):
    video = tmp_path / "rec.mp4"
    video.write_bytes(b"x")
    listing = write_list(tmp_path / "s.yaml", [
        {"movie": "m", "session": "s1", "camera": "cam0", "path": str(video), "offset_s": 1.0},
        {"movie": "m", "session": "s1", "camera": "cam1", "path": str(video), "offset_s": 2.0}])
    with pytest.raises(DataError, match="two offsets"):
        register(read_screening_list(listing), Workspace(tmp_path / "ws"))
