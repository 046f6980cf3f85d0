"""Fit TF (ALS) or a torch model (NLTF, FVAE, VAE) to the observed training faces of one movie.

GPU path = CPU path: faces and index lists live on the device, each step draws
a batch by index (no DataLoader), bf16 autocast wraps the networks on CUDA only,
and `torch.compile` is an option. Every `checkpoint_every` epochs a checkpoint
with model arguments, optimizer and RNG states is written; `resume=True`
continues from the `last` one and reaches the same parameters as an
uninterrupted run.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from configs.loader import to_dict
from models import checkpoint as ckpt
from models.config import ModelsConfig, TrainConfig
from models.data import Faces, Movie, Normalizer, pick_device
from models.fvae import FVAE, VAE
from models.nltf import NLTF
from models.tf import TensorFactorization
from pipeline.store import DataError, write_text_atomic

TORCH_MODELS = {"nltf": NLTF, "fvae": FVAE, "vae": VAE}
RUNTIME_FIELDS = ("epochs", "device", "progress", "compile", "cpu_threads", "checkpoint_every", "keep_checkpoints", "amp")


# ----------------------------------------------------------------------------- the fitted model


@dataclass
class Fitted:
    """A trained model with its normalizer: predictions come back in the tensor's units."""
    kind: str
    model: object                      # TensorFactorization or an nn.Module
    normalizer: Normalizer
    device: torch.device
    metrics: list

    @torch.no_grad()
    def predict(self, i: np.ndarray, t: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """Faces (B, 136) in original units for members i and seconds t."""
        return self._batched(lambda a, b: self.model.predict(a, b), i, t, batch_size)

    @torch.no_grad()
    def predict_rows(self, codes: torch.Tensor, rows: np.ndarray, t: np.ndarray,
                     batch_size: int = 65536) -> np.ndarray:
        """Faces for new members given their codes (from infer_members), rows indexing codes."""
        return self._batched(lambda a, b: self.model.predict_rows(codes[a], b), rows, t, batch_size)

    def _batched(self, fn: Callable, i: np.ndarray, t: np.ndarray, batch_size: int) -> np.ndarray:
        self.model.eval()
        out = []
        for s in range(0, len(i), batch_size):
            a = torch.as_tensor(i[s:s + batch_size], device=self.device, dtype=torch.long)
            b = torch.as_tensor(t[s:s + batch_size], device=self.device, dtype=torch.long)
            out.append(self.normalizer.decode(fn(a, b).float()).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.normalizer.mean)), np.float32)


# ----------------------------------------------------------------------------- entry point


def fit_model(kind: str, movie: Movie, train_mask: np.ndarray, models_cfg: ModelsConfig,
              train_cfg: TrainConfig, out_dir: Path, *, resume: bool = False, split: dict | None = None,
              on_epoch_end: Callable[[int], None] | None = None) -> Fitted:
    """Train model `kind` on the faces where `train_mask` is True; checkpoints go under out_dir.

    resume=False refuses a folder that already holds checkpoints (it names the
    fix); resume=True continues from its `last` checkpoint (or loads the
    finished model) after checking that configuration and data are the same.
    """
    if kind != "tf" and kind not in TORCH_MODELS:
        raise ValueError(f"unknown model '{kind}'; choose tf, nltf, fvae or vae")
    if train_mask.shape != movie.mask.shape or (train_mask & ~movie.mask).any():
        raise DataError("the training mask must be (N, T) and select only observed faces")
    if not train_mask.any():
        raise DataError("the training mask selects no face; nothing to fit")
    device = pick_device(train_cfg.device)
    normalizer = Normalizer.fit(movie.landmarks, train_mask)
    faces = Faces(normalizer.encode(movie.landmarks), train_mask, device)
    fingerprint = _fingerprint(kind, movie, train_mask, models_cfg, train_cfg, split or {})
    folder = Path(out_dir) / "checkpoints"
    saved = ckpt.load_last(folder)
    if saved is not None and not resume:
        raise ValueError(f"{folder} already holds checkpoints. Pass --resume (resume=True) to continue "
                         f"that run, or choose a new --run-dir.")
    if saved is not None:
        ckpt.check_same_config(saved["fingerprint"], fingerprint, folder)
    with cpu_threads(train_cfg.cpu_threads if device.type == "cpu" else 0):
        if kind == "tf":
            return _fit_tf(faces, normalizer, models_cfg, train_cfg, folder, fingerprint, saved)
        return _fit_torch(kind, faces, normalizer, models_cfg, train_cfg, Path(out_dir), fingerprint, saved,
                          on_epoch_end)


@contextlib.contextmanager
def cpu_threads(n: int):
    """Use n torch threads inside the block (0: leave torch's setting), then restore."""
    before = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _fingerprint(kind: str, movie: Movie, train_mask: np.ndarray, models_cfg: ModelsConfig,
                 train_cfg: TrainConfig, split: dict) -> dict:
    """Everything that shapes the result; resuming under another fingerprint is refused."""
    data = {"shape": list(movie.landmarks.shape), "train_faces": int(train_mask.sum()),
            "train_mask_sha": hashlib.sha256(np.packbits(train_mask).tobytes()).hexdigest()[:16]}
    if kind == "tf":
        model = {"k": models_cfg.k, "tf": to_dict(models_cfg.tf), "seed": train_cfg.seed}
    else:
        model = {k: v for k, v in to_dict(models_cfg).items() if k not in ("names", "tf")}
        model["train"] = {k: v for k, v in to_dict(train_cfg).items() if k not in RUNTIME_FIELDS}
    return json.loads(json.dumps({"kind": kind, **model, "data": data, "split": split}, default=str))


# ----------------------------------------------------------------------------- TF


def _fit_tf(faces: Faces, normalizer: Normalizer, models_cfg: ModelsConfig, train_cfg: TrainConfig,
            folder: Path, fingerprint: dict, saved: dict | None) -> Fitted:
    n_members, n_seconds = faces.mask.shape
    model = TensorFactorization(n_members, n_seconds, models_cfg.k, models_cfg.tf.ridge, faces.device)
    if saved is not None:
        model.load_state_dict(saved["model"])
        return Fitted("tf", model, normalizer, faces.device, saved.get("metrics", []))
    started = time.perf_counter()
    bar = tqdm(total=models_cfg.tf.max_iters, desc="tf  ALS", disable=not train_cfg.progress, leave=False)

    def tick(step, loss):
        bar.update()
        bar.set_postfix(loss_per_face=f"{loss / max(faces.n_observed, 1):.4f}")

    history = model.fit(faces.x, faces.mask, max_iters=models_cfg.tf.max_iters, tol=models_cfg.tf.tol,
                        hals_sweeps=models_cfg.tf.hals_sweeps, seed=train_cfg.seed, callback=tick)
    bar.close()
    seconds = time.perf_counter() - started
    metrics = [{"iteration": n + 1, "recon": 0.5 * loss / faces.n_observed} for n, loss in enumerate(history)]
    metrics[-1]["seconds"] = round(seconds, 3)
    payload = {"kind": "tf", "args": model.args(), "model": model.state_dict(), "normalizer": normalizer.state(),
               "fingerprint": fingerprint, "metrics": metrics, "epoch": len(history)}
    ckpt.save(folder, "final.pt", payload)
    _write_metrics(folder.parent, metrics)
    return Fitted("tf", model, normalizer, faces.device, metrics)


# ----------------------------------------------------------------------------- torch models


def build_torch_model(kind: str, n_members: int, n_seconds: int, models_cfg: ModelsConfig) -> torch.nn.Module:
    return TORCH_MODELS[kind](n_members, n_seconds, models_cfg.k, hidden=models_cfg.hidden,
                              layers=models_cfg.layers, u_prior_std=models_cfg.u_prior_std,
                              v_prior_std=models_cfg.v_prior_std, obs_std=models_cfg.obs_std)


def make_optimizer(model: torch.nn.Module, train_cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW: networks at `lr` (with weight decay), per-member/per-second factors at `factor_lr`."""
    factors = [p for n, p in model.named_parameters() if n.startswith("factors.")]
    nets = [p for n, p in model.named_parameters() if not n.startswith("factors.")]
    groups = [{"params": nets, "lr": train_cfg.lr, "weight_decay": train_cfg.weight_decay}]
    if factors:
        groups.append({"params": factors, "lr": train_cfg.factor_lr, "weight_decay": 0.0})
    return torch.optim.AdamW(groups)


def kl_beta(models_cfg: ModelsConfig, epoch: int) -> float:
    """β for 1-based `epoch`: linear warm-up over kl_warmup_epochs, then kl_weight."""
    if models_cfg.kl_warmup_epochs <= 0:
        return models_cfg.kl_weight
    return models_cfg.kl_weight * min(1.0, epoch / models_cfg.kl_warmup_epochs)


def _fit_torch(kind: str, faces: Faces, normalizer: Normalizer, models_cfg: ModelsConfig,
               train_cfg: TrainConfig, out_dir: Path, fingerprint: dict, saved: dict | None,
               on_epoch_end: Callable[[int], None] | None) -> Fitted:
    device = faces.device
    ckpt.seed_everything(train_cfg.seed)
    n_members, n_seconds = faces.mask.shape
    model = build_torch_model(kind, n_members, n_seconds, models_cfg).to(device)
    optimizer = make_optimizer(model, train_cfg)
    generator = torch.Generator(device=device).manual_seed(train_cfg.seed)
    start_epoch, metrics = 0, []
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        ckpt.set_rng_state(saved["rng"], generator)
        start_epoch, metrics = saved["epoch"], list(saved["metrics"])
    loss_fn = _loss_fn(model, train_cfg, device)
    steps_per_epoch = -(-faces.n_observed // train_cfg.batch_size)
    bar = tqdm(total=steps_per_epoch * max(0, train_cfg.epochs - start_epoch), desc=f"{kind:<4}",
               disable=not train_cfg.progress, leave=False)
    for epoch in range(start_epoch + 1, train_cfg.epochs + 1):
        metrics.append(_train_epoch(model, loss_fn, optimizer, faces, train_cfg, kl_beta(models_cfg, epoch),
                                    generator, bar, epoch))
        if epoch % train_cfg.checkpoint_every == 0 or epoch == train_cfg.epochs:
            payload = {"kind": kind, "args": model.args(), "model": model.state_dict(),
                       "optimizer": optimizer.state_dict(), "rng": ckpt.rng_state(generator), "epoch": epoch,
                       "metrics": metrics, "fingerprint": fingerprint, "normalizer": normalizer.state()}
            ckpt.save(out_dir / "checkpoints", f"epoch_{epoch:04d}.pt", payload, train_cfg.keep_checkpoints)
            _write_metrics(out_dir, metrics)
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    bar.close()
    model.eval()
    model.finalize(faces)   # deterministic post-training step (the VAE's per-member latents)
    if kind == "vae" and start_epoch < train_cfg.epochs:
        payload = {**payload, "model": model.state_dict()}
        ckpt.save(out_dir / "checkpoints", f"epoch_{train_cfg.epochs:04d}.pt", payload, train_cfg.keep_checkpoints)
    return Fitted(kind, model, normalizer, device, metrics)


def _loss_fn(model: torch.nn.Module, train_cfg: TrainConfig, device: torch.device) -> Callable:
    """model.loss under bf16 autocast on CUDA (networks only; losses are summed in float32)."""
    fn = model.loss
    if train_cfg.compile:
        fn = torch.compile(fn)
    use_amp = train_cfg.amp and device.type == "cuda"

    def loss(*args):
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_amp):
            return fn(*args)
    return loss


def _train_epoch(model, loss_fn, optimizer, faces: Faces, train_cfg: TrainConfig, beta: float,
                 generator: torch.Generator, bar, epoch: int) -> dict:
    model.train()
    started = time.perf_counter()
    sums: dict[str, torch.Tensor] = {}
    n_steps = 0
    for i, t, x in faces.batches(train_cfg.batch_size, generator):
        terms = loss_fn(x, i, t, faces.n_observed, beta)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value.detach()
        n_steps += 1
        bar.update()
        if n_steps % 50 == 1:       # .item() syncs the GPU: only now and then
            bar.set_postfix({"epoch": epoch, **{k: f"{float(v.detach()):.3f}" for k, v in terms.items()}})
    seconds = time.perf_counter() - started
    row = {"epoch": epoch, **{k: float(v) / max(n_steps, 1) for k, v in sums.items()}, "beta": beta,
           "seconds": round(seconds, 3), "faces_per_s": round(faces.n_observed / max(seconds, 1e-9), 1)}
    return row


def _write_metrics(folder: Path, metrics: list[dict]) -> None:
    write_text_atomic(Path(folder) / "metrics.jsonl", "".join(json.dumps(m) + "\n" for m in metrics))


def load_fitted(folder: Path, device: str = "auto") -> Fitted:
    """Load a trained model from its folder (the checkpoint `last` points at)."""
    saved = ckpt.load_last(Path(folder) / "checkpoints")
    if saved is None:
        raise ValueError(f"no checkpoint under {folder}/checkpoints; train the model first")
    dev = pick_device(device)
    normalizer = Normalizer.from_state(saved["normalizer"])
    if saved["kind"] == "tf":
        model = TensorFactorization(**saved["args"], device=dev)
    else:
        model = TORCH_MODELS[saved["kind"]](**saved["args"]).to(dev)
    model.load_state_dict(saved["model"])
    model.eval()
    return Fitted(saved["kind"], model, normalizer, dev, saved.get("metrics", []))


__all__ = ["Fitted", "fit_model", "load_fitted", "build_torch_model", "kl_beta"]
