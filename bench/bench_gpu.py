"""FVAE training and prediction speed on a GPU, through the production code path, in one command.

    python bench/bench_gpu.py                          # CUDA, paper-sized tensor; < 5 min on one H200
    python bench/bench_gpu.py --out gpu.json           # ... and every number as JSON
    python bench/bench_gpu.py --device cpu --quick     # tiny sizes: checks the script on a CPU (< 60 s)
    python bench/bench_gpu.py models.hidden=512 models.k=16   # config overrides (section.key=value)
    python bench/bench_gpu.py --no-compile --batch-sizes 8192 65536   # see --help for sizes and budgets

What runs is what `models.train` runs: build_torch_model, make_optimizer, _loss_fn
(bf16 autocast on CUDA, optional torch.compile), _train_epoch and Faces.batches
(faces resident on the device, batches drawn by index); train.amp, train.compile and
train.batch_size are set per measurement. Four parts (progress lines while they run;
--out is rewritten after every step, so a killed run keeps what it measured):

  check     CPU vs the device on a small synthetic movie (N=30, T=120), 2 epochs from one
            seed, held-out faces predicted by Fitted.predict. 'matched': the device and the
            CPU draw the same batch order and reparameterization noise (both drawn on the CPU),
            so only the arithmetic differs; PASS when the held-out MSE differs by < 2 %
            (amp off; amp on is reported only). 'same weights': the CPU-trained model
            predicting on the device (PASS when the MSE differs by < 0.1 %). 'fit_model': the
            whole production fit on each device; its random streams are the device's own,
            so the two are different draws (reported only). With --device cpu: CPU vs CPU.
  train     training faces/s on a paper-sized tensor (N=350, T=6000, ~13 % missing, ~1.8M
            faces; random data) for batch sizes × amp off/on × compile off/on, timed over a
            fixed number of full batches after a warm-up, between torch.cuda.synchronize()
            calls. A compile that fails or runs past its budget is reported, not fatal.
  epoch     one epoch over 16M faces: extrapolated from the best measured setting, and
            measured directly (a full production epoch, last partial batch included, after a
            warm-up) on a 16M-face random tensor built on the device when memory allows.
  predict   model.predict over all N×T cells in large batches (device tensors, amp off/on),
            and Fitted.predict (the production path that returns numpy on the host).

The issue's targets are printed beside the numbers: training ≥ 5M faces/s, a 16M-face
epoch < 60 s, prediction ≥ 50M faces/s. The run keeps to --budget-s (270 s): compiled
settings get what is left after the rest (at most --compile-budget-s) and are skipped,
the likeliest best ones first. Exit status: 0; 1 when the check fails; 2 when
CUDA is asked for and absent.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tqdm import tqdm  # noqa: E402

import models.fvae as fvae_module  # noqa: E402
from configs.loader import to_dict  # noqa: E402
from configs.schema import load_config  # noqa: E402
from models import checkpoint as ckpt  # noqa: E402
from models.data import (Faces, MemberOffsets, Normalizer, completion_split, movie_from_tensor,  # noqa: E402
                         mse_per_face)
from models.synthetic_tensor import SyntheticSpec, make_synthetic_movie  # noqa: E402
from models.train import (Fitted, _loss_fn, _train_epoch, build_torch_model, cpu_threads, fit_model,  # noqa: E402
                          kl_beta, make_optimizer, minus_offsets)

NO_CUDA = "no CUDA device: run with --device cpu --quick to check the script"
TARGETS = {"train_faces_per_s": 5e6, "epoch_16m_s": 60.0, "predict_faces_per_s": 50e6}
CHECK_MAX_REL = 0.02            # matched CPU vs device held-out MSE
SAME_WEIGHTS_MAX_REL = 1e-3     # the same weights predicting on both devices

# sizes: the paper-sized default run, and --quick (tiny: checks the script on a CPU)
FULL = dict(members=350, seconds=6000, missing=0.13, batch_sizes=(4096, 16384, 65536), warmup_steps=10,
            timed_faces=4_000_000, min_steps=20, epoch_faces=16_000_000, predict_batch_sizes=(65536, 1 << 20),
            check_members=30, check_seconds=120, check_epochs=2)
QUICK = dict(members=40, seconds=400, missing=0.13, batch_sizes=(256, 1024), warmup_steps=2,
             timed_faces=12_000, min_steps=4, epoch_faces=40_000, predict_batch_sizes=(4096, 65536),
             check_members=30, check_seconds=120, check_epochs=2)


# ----------------------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def human(x: float | None, unit: str = "") -> str:
    """1234567 → '1.23M', 16e6 → '16M' (None/NaN → '—')."""
    if x is None or not math.isfinite(x):
        return "—"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= scale:
            return f"{x / scale:.3g}{suffix}{unit}"
    return f"{x:.0f}{unit}"


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("PASS" if ok else "below target")


class Deadline:
    """The run's wall-clock budget: phases ask how much is left before starting optional work."""

    def __init__(self, seconds: float):
        self.end = time.perf_counter() + seconds

    def left(self) -> float:
        return self.end - time.perf_counter()


class TimeLimit(Exception):
    pass


@contextlib.contextmanager
def time_limit(seconds: float | None):
    """Raise TimeLimit in the main thread after `seconds` (SIGALRM; no limit when None or unsupported)."""
    if not seconds or not hasattr(signal, "SIGALRM"):
        yield
        return

    def handler(signum, frame):
        raise TimeLimit(f"ran past its {seconds:.0f} s budget")
    previous = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, max(seconds, 0.01))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def error_text(err: BaseException) -> str:
    """One line for a failure; a TimeLimit anywhere in the chain (inductor wraps it) says so."""
    seen = err
    while seen is not None:
        if isinstance(seen, TimeLimit):
            return f"time limit: {seen}"
        seen = seen.__cause__ or seen.__context__
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    return f"{type(err).__name__}: {' '.join(lines[:3])}"[:300]


def peak_reset(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float | None:
    return round(torch.cuda.max_memory_allocated(device) / 2 ** 30, 2) if device.type == "cuda" else None


def free_memory(device: torch.device) -> None:
    import gc
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def environment(device: torch.device) -> dict:
    env = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device),
           "cpu_count": os.cpu_count()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2 ** 30, 1),
                   capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda,
                   tf32_matmul=torch.backends.cuda.matmul.allow_tf32)
    return env


# ----------------------------------------------------------------------------- data


def missing_mask(n: int, t: int, missing: float, seed: int, mean_run_s: float = 3.0) -> np.ndarray:
    """(N, T) bool observed: a two-state Markov chain per member, `missing` of the time in runs of ~3 s."""
    rng = np.random.default_rng([seed, 0xB3])
    leave = 1.0 / mean_run_s                               # P(missing → observed)
    enter = missing * leave / max(1.0 - missing, 1e-9)     # P(observed → missing): stationary share = missing
    u = rng.random((t, n), dtype=np.float32)
    mask = np.empty((n, t), bool)
    state = rng.random(n) >= missing
    for s in range(t):
        state = np.where(state, u[s] >= enter, u[s] < leave)
        mask[:, s] = state
    return mask


def random_faces(n: int, t: int, missing: float, device: torch.device, seed: int) -> tuple[Faces, float]:
    """A random (N, T, 136) tensor built through the Faces constructor; (faces, seconds the constructor took)."""
    mask = missing_mask(n, t, missing, seed)
    x = np.random.default_rng(seed).standard_normal((n, t, 136), dtype=np.float32)
    started = time.perf_counter()
    faces = Faces(x, mask, device)
    sync(device)
    return faces, time.perf_counter() - started


def device_faces(n: int, t: int, missing: float, device: torch.device, seed: int) -> Faces:
    """A random Faces built on the device itself (no host copy of a 10 GB tensor), holding what the
    constructor would; refused (ValueError) when Faces has grown attributes this does not set."""
    probe = Faces(np.zeros((1, 1, 136), np.float32), np.ones((1, 1), bool), torch.device("cpu"))
    mask = missing_mask(n, t, missing, seed)
    faces = Faces.__new__(Faces)
    faces.device = device
    generator = torch.Generator(device=device).manual_seed(seed)
    faces.x = torch.randn((n, t, 136), generator=generator, device=device)
    faces.mask = torch.from_numpy(mask).to(device)
    faces.i, faces.t = (a.long() for a in torch.nonzero(faces.mask, as_tuple=True))
    faces.movie = None          # no movie behind these faces (models whose prepare() needs one refuse them)
    if set(vars(faces)) != set(vars(probe)):
        raise ValueError(f"models.data.Faces now holds {sorted(vars(probe))}; bench_gpu.device_faces sets "
                         f"{sorted(vars(faces))}: update device_faces")
    return faces


class Steps:
    """Faces seen through Faces.batches for timing: `steps` full batches (epochs repeat when needed),
    then one batch of `tail` faces (the size of an epoch's last batch, so a compiled loss meets it
    in the warm-up). n_observed stays the tensor's: the prior is spread as in training."""

    def __init__(self, faces: Faces, steps: int, tail: int = 0):
        self.faces, self.steps, self.tail = faces, steps, tail
        self.device, self.n_observed = faces.device, faces.n_observed
        self.drawn = 0

    def batches(self, batch_size: int, generator: torch.Generator):
        if self.faces.n_observed < batch_size:
            raise ValueError(f"batch {batch_size} is larger than the tensor ({self.faces.n_observed} faces)")
        done = 0
        while done < self.steps:
            for i, t, x in self.faces.batches(batch_size, generator):
                if len(i) < batch_size:
                    continue
                self.drawn += batch_size
                done += 1
                yield i, t, x
                if done == self.steps:
                    break
        if self.tail:
            i, t, x = next(self.faces.batches(self.tail, generator))
            self.drawn += len(i)
            yield i, t, x


# ----------------------------------------------------------------------------- training speed


def new_trainer(faces: Faces, cfg, batch_size: int, amp: bool, compile_: bool, seed: int):
    """Model, optimizer, loss and generator exactly as models.train._fit_torch makes them."""
    train_cfg = dataclasses.replace(cfg.train, batch_size=batch_size, amp=amp, compile=compile_, progress=False)
    ckpt.seed_everything(seed)
    n, t = faces.mask.shape
    model = build_torch_model("fvae", n, t, cfg.models).to(faces.device)
    optimizer = make_optimizer(model, train_cfg)
    loss_fn = _loss_fn(model, train_cfg, faces.device)
    generator = torch.Generator(device=faces.device).manual_seed(seed)
    return model, optimizer, loss_fn, generator, train_cfg


def run_epoch(model, loss_fn, optimizer, faces, train_cfg, cfg, generator) -> tuple[dict, float]:
    """models.train._train_epoch between two synchronizations: (its metrics row, wall seconds)."""
    bar = tqdm(disable=True)
    with cpu_threads(train_cfg.cpu_threads if faces.device.type == "cpu" else 0):
        sync(faces.device)
        started = time.perf_counter()
        row = _train_epoch(model, loss_fn, optimizer, faces, train_cfg, kl_beta(cfg.models, 1), generator, bar, 1)
        sync(faces.device)
        return row, time.perf_counter() - started


def time_training(faces: Faces, cfg, batch_size: int, amp: bool, compile_: bool, sizes: dict, seed: int,
                  limit_s: float | None = None) -> dict:
    """Training faces/s of one setting after a warm-up (which includes any compile)."""
    row = {"batch_size": batch_size, "amp": amp, "compile": compile_}
    device = faces.device
    if faces.n_observed < batch_size:
        return {**row, "status": f"skipped: batch larger than the tensor ({faces.n_observed} faces)"}
    steps = max(sizes["min_steps"], math.ceil(sizes["timed_faces"] / batch_size))
    if compile_:
        torch._dynamo.reset()      # each compiled setting starts as a fresh run (and never hits the recompile limit)
    try:
        with time_limit(limit_s):
            model, optimizer, loss_fn, generator, train_cfg = new_trainer(faces, cfg, batch_size, amp, compile_, seed)
            _, warm_s = run_epoch(model, loss_fn, optimizer, Steps(faces, sizes["warmup_steps"]), train_cfg, cfg,
                                  generator)
            peak_reset(device)
            timed = Steps(faces, steps)
            metrics, seconds = run_epoch(model, loss_fn, optimizer, timed, train_cfg, cfg, generator)
    except Exception as err:   # a compile that fails or runs too long is a result, not a crash
        if compile_:
            torch._dynamo.reset()
        free_memory(device)
        return {**row, "status": f"failed: {error_text(err)}"}
    loss = metrics.get("loss", float("nan"))
    row.update(status="ok" if math.isfinite(loss) else "non-finite loss", faces_per_s=timed.drawn / seconds,
               step_ms=1000 * seconds / steps, steps=steps, faces=timed.drawn, seconds=round(seconds, 3),
               warmup_s=round(warm_s, 2), loss=loss, peak_gb=peak_gb(device))
    del model, optimizer, loss_fn
    free_memory(device)
    return row


def time_full_epoch(faces: Faces, cfg, setting: dict, sizes: dict, seed: int, limit_s: float | None) -> dict:
    """One whole production epoch over `faces` at `setting`, after a warm-up that also meets the last batch's size."""
    bs, amp, compile_ = setting["batch_size"], setting["amp"], setting["compile"]
    out = {"batch_size": bs, "amp": amp, "compile": compile_, "faces": faces.n_observed}
    if compile_:
        torch._dynamo.reset()
    with time_limit(limit_s):
        model, optimizer, loss_fn, generator, train_cfg = new_trainer(faces, cfg, bs, amp, compile_, seed)
        _, warm_s = run_epoch(model, loss_fn, optimizer, Steps(faces, sizes["warmup_steps"], faces.n_observed % bs),
                              train_cfg, cfg, generator)
        peak_reset(faces.device)
        metrics, seconds = run_epoch(model, loss_fn, optimizer, faces, train_cfg, cfg, generator)
    out.update(status="ok" if math.isfinite(metrics.get("loss", float("nan"))) else "non-finite loss",
               seconds=round(seconds, 2), faces_per_s=faces.n_observed / seconds, warmup_s=round(warm_s, 2),
               steps=math.ceil(faces.n_observed / bs), reported_faces_per_s=metrics["faces_per_s"],
               peak_gb=peak_gb(faces.device))
    del model, optimizer, loss_fn
    free_memory(faces.device)
    return out


# ----------------------------------------------------------------------------- prediction speed


@torch.no_grad()
def time_predict(model, n: int, t: int, device: torch.device, batch_sizes, amp: bool, reps: int = 2) -> list[dict]:
    """model.predict over all N×T cells held on the device (outputs stay there)."""
    model.eval()
    i_all = torch.arange(n, device=device).repeat_interleave(t)
    t_all = torch.arange(t, device=device).repeat(n)
    rows = []
    use_amp = amp and device.type == "cuda"
    for bs in batch_sizes:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            model.predict(i_all[:bs], t_all[:bs])                       # warm-up
            sync(device)
            started = time.perf_counter()
            for _ in range(reps):
                for s in range(0, n * t, bs):
                    model.predict(i_all[s:s + bs], t_all[s:s + bs])
            sync(device)
        seconds = (time.perf_counter() - started) / reps
        rows.append({"path": "model.predict (device)", "batch_size": bs, "amp": use_amp, "cells": n * t,
                     "seconds": round(seconds, 4), "faces_per_s": n * t / seconds})
    return rows


def time_fitted_predict(model, n: int, t: int, device: torch.device, batch_sizes) -> list[dict]:
    """Fitted.predict (numpy indices in, numpy faces in the tensor's units out) over all N×T cells."""
    fitted = Fitted("fvae", model, Normalizer(mean=np.zeros(136, np.float32), scale=1.0), device, [])
    ii = np.repeat(np.arange(n), t)
    tt = np.tile(np.arange(t), n)
    rows = []
    for bs in batch_sizes:
        fitted.predict(ii[:bs], tt[:bs], bs)                               # warm-up
        sync(device)
        started = time.perf_counter()
        fitted.predict(ii, tt, bs)
        seconds = time.perf_counter() - started
        rows.append({"path": "Fitted.predict (host numpy)", "batch_size": bs, "amp": False, "cells": n * t,
                     "seconds": round(seconds, 4), "faces_per_s": n * t / seconds})
    return rows


# ----------------------------------------------------------------------------- CPU vs device


@contextlib.contextmanager
def cpu_drawn_noise(seed: int):
    """The FVAE's reparameterization noise drawn from one CPU generator whatever the device, so two
    devices see the same ε (the production models.fvae.reparameterize runs; only its torch.randn_like
    is served from the CPU stream)."""
    generator = torch.Generator().manual_seed(seed)
    original, randn_like = fvae_module.reparameterize, torch.randn_like

    def cpu_randn_like(ref, *args, **kwargs):
        return torch.randn(ref.shape, generator=generator, dtype=torch.float32).to(ref.device, ref.dtype)

    def reparameterize(mu, logvar):
        torch.randn_like = cpu_randn_like
        try:
            return original(mu, logvar)
        finally:
            torch.randn_like = randn_like

    fvae_module.reparameterize = reparameterize
    try:
        yield
    finally:
        fvae_module.reparameterize = original


def matched_fit(movie, train_mask: np.ndarray, cfg, train_cfg, device: torch.device) -> Fitted:
    """FVAE trained as _fit_torch does (normalizer, member offsets, Faces, build_torch_model,
    make_optimizer, _loss_fn, _train_epoch), with batch order and noise drawn on the CPU."""
    models_cfg = cfg.models
    normalizer = Normalizer.fit(movie.landmarks, train_mask, per_member=models_cfg.member_offsets)
    x_norm = normalizer.encode(movie.landmarks)
    offsets = MemberOffsets.fit(x_norm, train_mask) if models_cfg.member_offsets else None
    faces = Faces(minus_offsets(x_norm, offsets), train_mask, device)
    ckpt.seed_everything(train_cfg.seed)
    model = build_torch_model("fvae", *train_mask.shape, models_cfg).to(device)
    optimizer = make_optimizer(model, train_cfg)
    loss_fn = _loss_fn(model, train_cfg, device)
    generator = torch.Generator().manual_seed(train_cfg.seed)      # CPU: one batch order for every device
    bar, metrics = tqdm(disable=True), []
    with cpu_drawn_noise(train_cfg.seed), cpu_threads(train_cfg.cpu_threads if device.type == "cpu" else 0):
        for epoch in range(1, train_cfg.epochs + 1):
            metrics.append(_train_epoch(model, loss_fn, optimizer, faces, train_cfg, kl_beta(models_cfg, epoch),
                                        generator, bar, epoch))
    model.eval()
    return Fitted("fvae", model, normalizer, device, metrics, offsets)


def compare(ref: np.ndarray, other: np.ndarray, target: np.ndarray) -> dict:
    a, b = mse_per_face(ref, target), mse_per_face(other, target)
    return {"mse_cpu": a, "mse_device": b, "rel_mse_diff": abs(b - a) / max(a, 1e-12),
            "max_abs_diff": float(np.max(np.abs(ref.astype(np.float64) - other))) if len(ref) else 0.0}


def device_check(cfg, device: torch.device, sizes: dict, seed: int) -> dict:
    tensor, truth = make_synthetic_movie(SyntheticSpec(n_members=sizes["check_members"],
                                                       n_seconds=sizes["check_seconds"], seed=seed))
    movie = movie_from_tensor(tensor)
    train_mask, test_mask = completion_split(movie.mask, cfg.evaluate.holdout_every, cfg.evaluate.seed)
    ii, tt = np.nonzero(test_mask)
    target = movie.landmarks[ii, tt]
    base = dataclasses.replace(cfg.train, epochs=sizes["check_epochs"], compile=False, progress=False, seed=seed)
    cpu = torch.device("cpu")
    out = {"members": movie.n_members, "seconds": movie.n_seconds, "train_faces": int(train_mask.sum()),
           "test_faces": len(ii), "epochs": base.epochs, "batch_size": base.batch_size,
           "noise_floor": truth["noise_floor"], "compared": f"cpu vs {device}"}

    ref = matched_fit(movie, train_mask, cfg, dataclasses.replace(base, amp=False), cpu)
    ref_pred = ref.predict(ii, tt)
    other = matched_fit(movie, train_mask, cfg, dataclasses.replace(base, amp=False), device)
    out["matched_amp_off"] = compare(ref_pred, other.predict(ii, tt), target)
    out["matched_amp_off"]["passed"] = out["matched_amp_off"]["rel_mse_diff"] < CHECK_MAX_REL
    if device.type == "cuda":
        amp = matched_fit(movie, train_mask, cfg, dataclasses.replace(base, amp=True), device)
        out["matched_amp_on"] = compare(ref_pred, amp.predict(ii, tt), target)
    else:
        out["matched_amp_on"] = {"skipped": "amp (bf16 autocast) is CUDA-only: the CPU run is the amp-off run"}

    same = build_torch_model("fvae", *train_mask.shape, cfg.models)
    same.load_state_dict(ref.model.state_dict())
    same = Fitted("fvae", same.to(device).eval(), ref.normalizer, device, [], ref.offsets)
    out["same_weights"] = compare(ref_pred, same.predict(ii, tt), target)
    out["same_weights"]["passed"] = out["same_weights"]["rel_mse_diff"] < SAME_WEIGHTS_MAX_REL

    with tempfile.TemporaryDirectory(prefix="bench_gpu_") as tmp:
        fits = {}
        for dev in dict.fromkeys(["cpu", device.type]):
            train_cfg = dataclasses.replace(base, device=dev, amp=False)
            fits[dev] = fit_model("fvae", movie, train_mask, cfg.models, train_cfg, Path(tmp) / dev).predict(ii, tt)
    out["fit_model_amp_off"] = {**compare(fits["cpu"], fits[device.type], target),
                                "note": "each device's own random streams: different draws, reported only"}
    out["passed"] = bool(out["matched_amp_off"]["passed"] and out["same_weights"]["passed"])
    return out


# ----------------------------------------------------------------------------- printing


def print_check(check: dict) -> None:
    print(f"\nCPU vs device check ({check['compared']}; N={check['members']} T={check['seconds']}, "
          f"{check['train_faces']} training / {check['test_faces']} held-out faces, {check['epochs']} epochs, "
          f"batch {check['batch_size']}; noise floor {check['noise_floor']:.4f})")
    print(f"  {'run':<22}{'MSE cpu':>10}{'MSE device':>12}{'rel diff':>10}{'max |Δ|':>11}  result")
    for key, label, limit in (("matched_amp_off", "matched, amp off", CHECK_MAX_REL),
                              ("matched_amp_on", "matched, amp on", None),
                              ("same_weights", "same weights", SAME_WEIGHTS_MAX_REL),
                              ("fit_model_amp_off", "fit_model, amp off", None)):
        r = check[key]
        if "skipped" in r:
            print(f"  {label:<22}{'':>43}  skipped: {r['skipped']}")
            continue
        result = ("PASS" if r["passed"] else "FAIL") + f" (< {100 * limit:g} %)" if limit else "reported only"
        print(f"  {label:<22}{r['mse_cpu']:>10.4f}{r['mse_device']:>12.4f}{100 * r['rel_mse_diff']:>9.3f}%"
              f"{r['max_abs_diff']:>11.2e}  {result}")
    print(f"  check: {'PASS' if check['passed'] else 'FAIL'}")


def print_train(rows: list[dict], data: dict) -> None:
    print(f"\nFVAE training faces/s (N={data['members']} T={data['seconds']}, {data['faces']:,} faces, "
          f"{data['missing_percent']:.1f} % missing; Faces() built in {data['build_s']:.1f} s); "
          f"target ≥ {human(TARGETS['train_faces_per_s'])}")
    print(f"  {'batch':>7} {'amp':>4} {'compile':>8} {'faces/s':>10} {'step ms':>9} {'warm-up s':>10} "
          f"{'peak GB':>8}  status")
    for r in sorted(rows, key=lambda r: (r["compile"], r["batch_size"], r["amp"])):
        if r.get("status") == "ok":
            print(f"  {r['batch_size']:>7} {'on' if r['amp'] else 'off':>4} {'on' if r['compile'] else 'off':>8} "
                  f"{human(r['faces_per_s']):>10} {r['step_ms']:>9.2f} {r['warmup_s']:>10.1f} "
                  f"{'—' if r['peak_gb'] is None else r['peak_gb']:>8}  "
                  f"{'meets target' if r['faces_per_s'] >= TARGETS['train_faces_per_s'] else 'below target'}")
        else:
            print(f"  {r['batch_size']:>7} {'on' if r['amp'] else 'off':>4} {'on' if r['compile'] else 'off':>8} "
                  f"{'':>10} {'':>9} {'':>10} {'':>8}  {r['status']}")


def print_predict(rows: list[dict]) -> None:
    print(f"\nprediction faces/s over all {rows[0]['cells']:,} cells; target ≥ {human(TARGETS['predict_faces_per_s'])}")
    print(f"  {'path':<30}{'batch':>9}{'amp':>5}{'faces/s':>11}")
    for r in rows:
        print(f"  {r['path']:<30}{r['batch_size']:>9}{'on' if r['amp'] else 'off':>5}{human(r['faces_per_s']):>11}  "
              f"{'meets target' if r['faces_per_s'] >= TARGETS['predict_faces_per_s'] else 'below target'}")


def setting_text(r: dict) -> str:
    return f"batch {r['batch_size']}, amp {'on' if r['amp'] else 'off'}, compile {'on' if r['compile'] else 'off'}"


def summary(results: dict) -> dict:
    """The targets against the best numbers measured."""
    best, epoch, pred = results.get("best"), results.get("epoch_16m", {}), results.get("predict", [])
    best_pred = max(pred, key=lambda r: r["faces_per_s"]) if pred else None
    measured = epoch.get("measured", {})
    epoch_s = measured.get("seconds") if measured.get("status") == "ok" else epoch.get("extrapolated_s")
    return {
        "train_faces_per_s": {"value": best and best["faces_per_s"], "target": TARGETS["train_faces_per_s"],
                              "setting": best and setting_text(best),
                              "met": None if not best else best["faces_per_s"] >= TARGETS["train_faces_per_s"]},
        "epoch_16m_s": {"value": epoch_s, "target": TARGETS["epoch_16m_s"], "faces": epoch.get("faces"),
                        "how": "measured" if measured.get("status") == "ok" else "extrapolated",
                        "met": None if epoch_s is None or (epoch.get("faces") or 0) < 16e6
                        else epoch_s < TARGETS["epoch_16m_s"]},
        "predict_faces_per_s": {"value": best_pred and best_pred["faces_per_s"],
                                "target": TARGETS["predict_faces_per_s"],
                                "setting": best_pred and f"{best_pred['path']}, batch {best_pred['batch_size']}, "
                                                         f"amp {'on' if best_pred['amp'] else 'off'}",
                                "met": None if not best_pred else
                                best_pred["faces_per_s"] >= TARGETS["predict_faces_per_s"]},
        "check": {"passed": results.get("check", {}).get("passed")},
    }


def print_summary(s: dict, quick: bool) -> None:
    print("\ntargets (issue 9)")
    t, e, p = s["train_faces_per_s"], s["epoch_16m_s"], s["predict_faces_per_s"]
    print(f"  {'FVAE training':<22}{human(t['value']):>10} faces/s   target ≥ {human(t['target']):<6} "
          f"{verdict(t['met']):<13} {t['setting'] or ''}")
    epoch_text = "—" if e["value"] is None else f"{e['value']:.1f} s"
    label = f"{human(e['faces'] or 0)}-face epoch"
    print(f"  {label:<22}{epoch_text:>10}           target < {e['target']:.0f} s   "
          f"{verdict(e['met']):<13} {e['how']}")
    print(f"  {'prediction':<22}{human(p['value']):>10} faces/s   target ≥ {human(p['target']):<6} "
          f"{verdict(p['met']):<13} {p['setting'] or ''}")
    c = s["check"]["passed"]
    print(f"  {'CPU vs device check':<22}{'':>10}           {'':<16}{'—' if c is None else ('PASS' if c else 'FAIL')}")
    if quick:
        print("  (--quick: tiny sizes to check the script; the targets are for the default CUDA run)")


# ----------------------------------------------------------------------------- main


def run(args, cfg, device: torch.device) -> dict:
    sizes = dict(QUICK if args.quick else FULL)
    for key in ("members", "seconds", "epoch_faces", "timed_faces"):
        if getattr(args, key) is not None:
            sizes[key] = getattr(args, key)
    if args.batch_sizes:
        sizes["batch_sizes"] = tuple(args.batch_sizes)
    deadline = Deadline(args.budget_s)
    seed = cfg.train.seed
    results: dict = {"environment": environment(device), "quick": args.quick, "sizes": sizes,
                     "targets": TARGETS, "config": {"models": to_dict(cfg.models), "train": to_dict(cfg.train)}}

    def save():
        if args.out:
            Path(args.out).write_text(json.dumps(results, indent=1, default=str))

    env = results["environment"]
    print(f"bench_gpu: torch {env['torch']} on {env.get('gpu', 'CPU')} ({device}); FVAE k={cfg.models.k} "
          f"hidden={cfg.models.hidden} layers={cfg.models.layers}; budget {args.budget_s:.0f} s"
          + (" [--quick]" if args.quick else ""), flush=True)

    # 1. CPU vs device
    started = time.perf_counter()
    results["check"] = device_check(cfg, device, sizes, seed)
    results["check"]["elapsed_s"] = round(time.perf_counter() - started, 1)
    print_check(results["check"])
    save()

    # 2. training speed, eager
    faces, build_s = random_faces(sizes["members"], sizes["seconds"], sizes["missing"], device, seed)
    data = {"members": sizes["members"], "seconds": sizes["seconds"], "faces": faces.n_observed,
            "missing_percent": 100 * (1 - faces.n_observed / (sizes["members"] * sizes["seconds"])),
            "build_s": build_s, "build_gb": round(sizes["members"] * sizes["seconds"] * 136 * 4 / 2 ** 30, 2)}
    results["data"] = data
    rows = results["train"] = []
    amps = (False, True) if device.type == "cuda" else (False,)     # autocast is CUDA-only in _loss_fn
    for bs in sizes["batch_sizes"]:
        for amp in amps:
            if deadline.left() < 60:
                rows.append({"batch_size": bs, "amp": amp, "compile": False,
                             "status": "skipped (less than 60 s of the budget left)"})
            else:
                rows.append(time_training(faces, cfg, bs, amp, False, sizes, seed))
            print(f"  · batch {bs} amp {'on' if amp else 'off'}: {rows[-1].get('status')} "
                  f"{human(rows[-1].get('faces_per_s'))} faces/s", flush=True)
            save()

    # 3. prediction
    ckpt.seed_everything(seed)
    model = build_torch_model("fvae", sizes["members"], sizes["seconds"], cfg.models).to(device)
    pred = []
    for amp in amps:
        pred += time_predict(model, sizes["members"], sizes["seconds"], device, sizes["predict_batch_sizes"], amp)
    pred += time_fitted_predict(model, sizes["members"], sizes["seconds"], device, sizes["predict_batch_sizes"])
    results["predict"] = pred
    del model
    free_memory(device)
    save()

    # 4. training speed, compiled (within what the budget leaves for the 16M epoch)
    ok = [r for r in rows if r.get("status") == "ok"]
    best_eager = max(ok, key=lambda r: r["faces_per_s"]) if ok else None
    epoch_reserve = 30.0 + (sizes["epoch_faces"] / best_eager["faces_per_s"] if best_eager else 60.0)
    compile_budget = min(args.compile_budget_s, deadline.left() - epoch_reserve)
    compile_end = time.perf_counter() + compile_budget
    for bs in sorted(sizes["batch_sizes"], reverse=True):     # the likeliest best first, should the budget end
        for amp in amps[::-1]:
            row = {"batch_size": bs, "amp": amp, "compile": True}
            left = compile_end - time.perf_counter()
            if args.no_compile or args.quick:
                row["status"] = "skipped (" + ("--no-compile" if args.no_compile else "--quick") + ")"
            elif left < 20:
                row["status"] = f"skipped (compile budget of {max(compile_budget, 0):.0f} s spent)"
            else:
                row = time_training(faces, cfg, bs, amp, True, sizes, seed, limit_s=left)
            rows.append(row)
            if row["status"] == "ok" or not row["status"].startswith("skipped"):
                print(f"  · batch {bs} amp {'on' if amp else 'off'} compiled: {row['status']} "
                      f"{human(row.get('faces_per_s'))} faces/s", flush=True)
            save()
    print_train(rows, data)
    ok = [r for r in rows if r.get("status") == "ok"]
    best = results["best"] = max(ok, key=lambda r: r["faces_per_s"]) if ok else None
    print_predict(pred)
    del faces
    free_memory(device)

    # 5. the 16M-face epoch: extrapolated, then measured
    epoch = results["epoch_16m"] = {"faces": sizes["epoch_faces"]}
    if best:
        epoch["extrapolated_s"] = sizes["epoch_faces"] / best["faces_per_s"]
        epoch["extrapolated_from"] = setting_text(best)
        epoch["paper_tensor_epoch_s"] = data["faces"] / best["faces_per_s"]
    n16 = sizes["members"]
    t16 = math.ceil(sizes["epoch_faces"] / (n16 * (1 - sizes["missing"])))
    need_gb = n16 * t16 * 136 * 4 / 2 ** 30
    epoch["measured"] = measured = {"members": n16, "seconds": t16, "tensor_gb": round(need_gb, 2)}
    settings = [best] + ([best_eager] if best_eager and best is not best_eager else []) if best else []
    reason = None
    if not settings:
        reason = "no training setting ran"
    elif device.type == "cuda" and torch.cuda.mem_get_info(device)[0] / 2 ** 30 < 1.5 * need_gb + 2:
        reason = f"not enough free GPU memory for a {need_gb:.1f} GB tensor"
    elif epoch.get("extrapolated_s", 0) > min(args.max_epoch_s, deadline.left() - 10):
        reason = (f"the extrapolated epoch ({epoch['extrapolated_s']:.0f} s) does not fit in "
                  f"{min(args.max_epoch_s, deadline.left() - 10):.0f} s (--max-epoch-s / budget left)")
    if reason:
        measured["status"] = f"skipped: {reason}"
    else:
        try:
            started = time.perf_counter()
            big = device_faces(n16, t16, sizes["missing"], device, seed)
            measured.update(faces=big.n_observed, build_s=round(time.perf_counter() - started, 1))
            for setting in settings:
                try:
                    limit = max(deadline.left() - 5, 10) if setting["compile"] else None
                    measured.update(time_full_epoch(big, cfg, setting, sizes, seed, limit))
                    break
                except Exception as err:
                    measured["status"] = f"failed at {setting_text(setting)}: {error_text(err)}"
                    if setting["compile"]:
                        torch._dynamo.reset()
                    free_memory(device)
            del big
        except Exception as err:     # out of memory (device or host), or Faces changed under device_faces
            measured["status"] = f"skipped: {error_text(err)}"
        free_memory(device)
    print(f"\none epoch over {sizes['epoch_faces']:,} faces; target < {TARGETS['epoch_16m_s']:.0f} s")
    if "extrapolated_s" in epoch:
        print(f"  extrapolated  {epoch['extrapolated_s']:>8.1f} s   from {human(best['faces_per_s'])} faces/s "
              f"({epoch['extrapolated_from']}); the {data['faces']:,}-face tensor: "
              f"{epoch['paper_tensor_epoch_s']:.2f} s per epoch")
    if measured.get("status") == "ok":
        print(f"  measured      {measured['seconds']:>8.1f} s   {measured['faces']:,} faces (N={n16} T={t16}, "
              f"{need_gb:.1f} GB on the device, built in {measured['build_s']} s), {measured['steps']} steps, "
              f"{human(measured['faces_per_s'])} faces/s ({setting_text(measured)}; warm-up {measured['warmup_s']} s)")
    else:
        print(f"  measured      {measured.get('status')}")
    results["summary"] = summary(results)
    results["elapsed_s"] = round(args.budget_s - deadline.left(), 1)
    print_summary(results["summary"], args.quick)
    print(f"\nelapsed {results['elapsed_s']:.0f} s")
    save()
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the script in < 60 s on a CPU")
    parser.add_argument("--out", default=None, help="also write every number as JSON here (after each part)")
    parser.add_argument("--members", type=int, default=None, help="N of the throughput tensor (350)")
    parser.add_argument("--seconds", type=int, default=None, help="T of the throughput tensor (6000)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="(4096 16384 65536)")
    parser.add_argument("--timed-faces", type=int, default=None, help="faces timed per setting (4M)")
    parser.add_argument("--epoch-faces", type=int, default=None, help="faces in the epoch timed directly (16M)")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile settings")
    parser.add_argument("--compile-budget-s", type=float, default=110.0,
                        help="wall seconds for all compiled settings together (compiles included)")
    parser.add_argument("--max-epoch-s", type=float, default=120.0,
                        help="measure the big epoch directly only if it is expected to take less")
    parser.add_argument("--budget-s", type=float, default=270.0, help="wall-clock budget of the whole run")
    parser.add_argument("--config", action="append", default=[], help="YAML overlay(s)")
    parser.add_argument("overrides", nargs="*", help="config overrides section.key=value")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print(NO_CUDA, file=sys.stderr)
        return 2
    cfg = load_config(args.config, ["train.progress=false", f"train.device={args.device}", *args.overrides])
    results = run(args, cfg, torch.device(args.device))
    return 0 if results["check"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
