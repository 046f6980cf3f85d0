"""Issue 13: the stages' units as Ray tasks on a real local Ray instance: the same outputs as the local
executor, byte for byte; a worker process that dies is retried by Ray; a killed driver is resumed by the
rerun; bad input (no Ray, an unreachable address, a workspace the workers cannot see) is one clear error.
Skipped, with the reason, where Ray is not installed."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.runner import run_stage
from pipeline.store import DataError, Workspace
from toy_stages import NUMBERS, NUMBERS_DYING_ONCE, SUMS, ToyConfig, blind_probe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_reliability import snapshot  # noqa: E402  (every output's sha256, every manifest less its wall time)

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install 'audience-fvae[ray]'")
from pipeline.ray_executor import RayExecutor  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
SMALL = ("--small", "synthetic.duration_s=2", "synthetic.sessions=2", "synthetic.fps=6", "sources.chunk_s=1")


@pytest.fixture(scope="module")
def executor():
    # the workers are started by this Ray instance with this environment: they import the toy stages
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(REPO), os.environ.get("PYTHONPATH", "")])
    ex = RayExecutor(num_cpus=2, max_retries=2)
    yield ex
    ex.close()


def _toy_run(root: Path, executor=None, numbers=NUMBERS) -> dict[str, str]:
    ws, cfg = Workspace(root), ToyConfig()
    for stage in (numbers, SUMS):
        report = run_stage(stage, cfg, ws, progress=False, executor=executor)
        assert not report.failed and not report.blocked, (report.failed, report.blocked)
    return snapshot(root, ("cache",))


def test_ray_tasks_write_what_the_local_executor_writes(executor, tmp_path):
    assert _toy_run(tmp_path / "ray", executor) == _toy_run(tmp_path / "local")


def test_a_worker_that_dies_is_retried_by_ray(executor, tmp_path):
    ws = tmp_path / "ray"
    report = run_stage(NUMBERS_DYING_ONCE, ToyConfig(), Workspace(ws), progress=False, executor=executor)
    assert (ws / ".died-k2").exists()                           # the first attempt did die
    assert not report.failed and len(report.done) == 6
    local = tmp_path / "local"
    run_stage(NUMBERS, ToyConfig(), Workspace(local), progress=False)
    assert snapshot(ws, ("cache",)) == snapshot(local, ("cache",))


def test_a_workspace_the_workers_cannot_see_is_refused_before_any_work(executor, tmp_path):
    with pytest.raises(DataError, match="not visible to the Ray workers on node-without-the-share"):
        executor.check_shared(tmp_path, read_probe=blind_probe)
    assert not list(tmp_path.glob(".audience-probe-*"))         # the probe is cleaned up
    executor.check_shared(tmp_path)                              # this machine sees it


def test_an_unreachable_address_and_no_ray_are_one_clear_error_each(monkeypatch):
    started = time.monotonic()
    with pytest.raises(DataError, match="cannot reach the Ray cluster at ray.address='127.0.0.1:9'"):
        RayExecutor(address="127.0.0.1:9")
    assert time.monotonic() - started < 10
    monkeypatch.setitem(sys.modules, "ray", None)                # as if not installed
    with pytest.raises(DataError, match=r"pip install 'audience-fvae\[ray\]'"):
        RayExecutor()


def _audience(*args, cwd: Path, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline.cli", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)}, **kw)


@pytest.mark.slow
def test_cli_run_on_ray_equals_the_local_run_and_a_killed_driver_resumes(tmp_path):
    """`audience run --executor ray` on a small synthetic screening: the same bytes as the local executor;
    the driver killed (with its whole process group) mid-run, then the same command again: the same bytes."""
    local = tmp_path / "local"
    local.mkdir()
    done = _audience("run", "--synthesize", "--workspace", "ws", "--quiet", *SMALL, cwd=local)
    assert done.returncode == 0, done.stdout + done.stderr
    reference = snapshot(local / "ws")
    on_ray = tmp_path / "ray"
    on_ray.mkdir()
    cmd = ["run", "--synthesize", "--workspace", "ws", "--quiet", "--executor", "ray", "--workers", "2", *SMALL]
    done = _audience(*cmd, cwd=on_ray)
    assert done.returncode == 0, done.stdout + done.stderr
    assert snapshot(on_ray / "ws") == reference
    killed = tmp_path / "killed"
    killed.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline.cli", *cmd], cwd=killed, start_new_session=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list((killed / "ws" / "cache").rglob("*.manifest.json")):
        time.sleep(0.2)                                        # some units done, the rest in flight
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    again = _audience(*cmd, cwd=killed)
    assert again.returncode == 0, again.stdout + again.stderr
    assert snapshot(killed / "ws") == reference


def test_the_k_sweep_fans_out_over_ray_with_the_same_results(executor, tmp_path):
    """One Ray task per K (workspace.executor ray) gives the rows fitting here gives."""
    import dataclasses

    import numpy as np

    from models.data import load_movie
    from models.evaluate import ksweep
    from models_fixtures import tiny_config, with_workspace, write_tiny_tensor

    movie = load_movie(write_tiny_tensor(tmp_path))
    cfg = with_workspace(tiny_config(), tmp_path / "ws")
    here = ksweep(movie, cfg, tmp_path / "here")["rows"]
    on_ray = cfg.replace(workspace=dataclasses.replace(cfg.workspace, executor="ray"))
    there = ksweep(movie, on_ray, tmp_path / "ray")["rows"]
    assert [(r["model"], r["k"]) for r in there] == [(r["model"], r["k"]) for r in here]
    np.testing.assert_allclose([r["test_mse"] for r in there], [r["test_mse"] for r in here], rtol=1e-4)
    assert ray.is_initialized()                      # the sweep joined the running Ray, and left it running


def test_completion_trains_its_models_as_ray_tasks_with_the_same_results(executor, tmp_path, capsys):
    """With workspace.executor ray each model of a protocol trains as its own Ray task (its own folder),
    and the driver reuses what they wrote: the rows equal fitting here."""
    import dataclasses

    import numpy as np

    from models.data import load_movie
    from models.evaluate import completion
    from models_fixtures import tiny_config, with_workspace, write_tiny_tensor

    movie = load_movie(write_tiny_tensor(tmp_path))
    cfg = with_workspace(tiny_config(), tmp_path / "ws")
    here = completion(movie, cfg, tmp_path / "here")["rows"]
    on_ray = cfg.replace(workspace=dataclasses.replace(cfg.workspace, executor="ray"))
    capsys.readouterr()
    there = completion(movie, on_ray, tmp_path / "ray")["rows"]
    driver = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[models]")]
    assert sum("reusing the trained model" in line for line in driver) == len(cfg.models.names), driver
    assert [r["model"] for r in there] == [r["model"] for r in here]
    np.testing.assert_allclose([r["test_mse"] for r in there], [r["test_mse"] for r in here], rtol=1e-4)
    for kind in cfg.models.names:
        assert (tmp_path / "ray" / "completion" / kind / "checkpoints" / "last").is_file()
