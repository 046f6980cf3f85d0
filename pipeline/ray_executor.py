"""Units of work as Ray tasks (`workspace.executor: ray`, `--executor ray`): the same units, compute
functions and manifests as the local process pool, on a Ray cluster or a Ray instance on this machine.

What travels is the unit (a recording's chunk, a session, a movie: paths and a few numbers), never
frames: each task decodes its own chunk from the shared workspace and writes its own outputs there,
through the runner's atomic commit and manifest (pipeline/runner.py), so resume and caching stay the
runner's. Ray retries a task whose worker process died (`ray.max_retries`, default 3); a task whose
compute raised is not retried by Ray (a bad recording fails the same way again) but reported as a failed
unit. A dead driver loses only the tasks in flight: rerunning the command skips what is done.

The workspace must be on storage every node mounts at the same path (NFS or similar): before any work is
submitted a probe file is written there and read back by one task on every node.
"""
from __future__ import annotations

import socket
import uuid
from pathlib import Path
from typing import Callable, Iterator

from pipeline.store import DataError

PROBE_PREFIX = ".audience-probe-"


def _run_job(fn: Callable, *args):
    """In a Ray worker: one runner job ((unit name, error or None), as the local pool's)."""
    return fn(*args)


def _read_probe(path: str) -> tuple[str, str]:
    try:
        return socket.gethostname(), Path(path).read_text()
    except OSError as err:
        return socket.gethostname(), f"unreadable: {err}"


def _check_reachable(address: str) -> None:
    """Fail fast, naming the fix, when nothing listens at a cluster address (ray.init would wait long)."""
    if address in ("", "auto", "local"):
        return
    host_port = address.split("://", 1)[-1]
    host, _, port = host_port.rpartition(":")
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=3):
            return
    except (OSError, ValueError) as err:
        raise DataError(f"cannot reach the Ray cluster at ray.address={address!r} ({err}). Start it there "
                        f"(`ray start --head`), fix ray.address (host:port of the head, or ray://host:10001), or "
                        f"set it to \"\" to start Ray on this machine.") from None


class RayExecutor:
    """Submits runner jobs as Ray tasks and yields their results as they finish."""

    def __init__(self, address: str = "", num_cpus: int = 1, max_retries: int = 3,
                 workspace_root: Path | None = None):
        try:
            import ray
        except ImportError:
            raise DataError("workspace.executor=ray needs Ray: pip install 'audience-fvae[ray]' (the ray wheel), or "
                            "run with the local executor (workspace.executor=local, the default).") from None
        self.ray, self.max_retries = ray, max_retries
        _check_reachable(address)
        self.started_here = not ray.is_initialized()
        if self.started_here:
            kwargs = {"include_dashboard": False, "log_to_driver": False, "configure_logging": False}
            if address:
                kwargs["address"] = address
            else:
                kwargs["num_cpus"] = num_cpus
            try:
                ray.init(**kwargs)
            except (ConnectionError, RuntimeError, ValueError) as err:
                raise DataError(f"Ray did not start at ray.address={address!r}: {err}") from None
        self._remote = ray.remote(max_retries=max_retries, num_cpus=1)(_run_job)
        self._pending: dict = {}
        if workspace_root is not None:
            self.check_shared(Path(workspace_root))

    def check_shared(self, root: Path, read_probe: Callable[[str], tuple[str, str]] = _read_probe) -> None:
        """A probe file written here must read back the same on every alive node, else DataError."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        root.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex
        probe = root / f"{PROBE_PREFIX}{token}"
        probe.write_text(token)
        try:
            reader = self.ray.remote(num_cpus=0)(read_probe)
            nodes = [n["NodeID"] for n in self.ray.nodes() if n.get("Alive")]
            refs = [reader.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
                    .remote(str(probe.resolve())) for node in nodes]
            blind = [f"{host} ({text})" for host, text in self.ray.get(refs) if text != token]
        finally:
            probe.unlink(missing_ok=True)
        if blind:
            raise DataError(f"the workspace {root} is not visible to the Ray workers on {', '.join(blind)}: put it "
                            f"on storage every node mounts at the same path (NFS or similar) and pass that path "
                            f"as --workspace.")

    def results(self, jobs: list[tuple[Callable, tuple]]) -> Iterator[tuple[int, tuple[str | None, str | None]]]:
        """(job index, (unit name, error)) as each task ends; a task Ray gave up on has name None."""
        self._pending = {self._remote.remote(fn, *args): i for i, (fn, args) in enumerate(jobs)}
        while self._pending:
            ready, _ = self.ray.wait(list(self._pending), num_returns=1)
            for ref in ready:
                index = self._pending.pop(ref)
                try:
                    yield index, self.ray.get(ref)
                except self.ray.exceptions.TaskCancelledError:
                    continue
                except Exception as err:  # noqa: BLE001 - the worker died more often than max_retries
                    yield index, (None, f"Ray task failed after {self.max_retries} retries: {err}")

    def map(self, fn: Callable, arg_tuples: list[tuple]) -> list:
        """fn(*args) for each args as Ray tasks, results in order; a task's exception is raised here."""
        return self.ray.get([self._remote.remote(fn, *args) for args in arg_tuples])

    def cancel_pending(self) -> None:
        for ref in list(self._pending):
            self.ray.cancel(ref)

    def close(self) -> None:
        if self.started_here and self.ray.is_initialized():
            self.ray.shutdown()


def executor_for(cfg) -> RayExecutor | None:
    """The Ray executor a ProjectConfig asks for (None: the local process pool)."""
    if cfg.workspace.executor != "ray":
        return None
    return RayExecutor(cfg.ray.address, cfg.workspace.workers, cfg.ray.max_retries, Path(cfg.workspace.root))
