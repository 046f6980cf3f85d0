"""Fit TF (ALS) or a torch model (NLTF, FVAE, VAE) to the observed training faces of one movie.

GPU path = CPU path: faces and index lists live on the device, each step draws
a batch by index (no DataLoader), bf16 autocast wraps the networks on CUDA only,
and `torch.compile` is an option. Every `checkpoint_every` epochs, and no sooner than
`checkpoint_seconds` after the last one (always after the last epoch), a checkpoint
with model arguments, optimizer and RNG states is written; `resume=True`
continues from the `last` one and reaches the same parameters as an
uninterrupted run.

Two safeguards for small or noisy tensors (both off in configs/paper.yaml):
member offsets (models.member_offsets; see models/data.py) and validation
(train.validation_every): a slice of each member's training faces is held back,
and an epoch (or a TF ridge) is only kept when it predicts those faces better,
by more than one standard error, than the fit kept so far; the start, with the
decoder at zero, predicts each member's own mean face.
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
from models import registry
from models.config import ModelsConfig, TrainConfig
from models.data import Faces, MemberOffsets, Movie, Normalizer, pick_device, validation_split
from models.registry import FactorModel, ModelSpec
from models.tf import TensorFactorization
from pipeline.store import DataError, write_text_atomic

RUNTIME_FIELDS = ("epochs", "device", "progress", "compile", "cpu_threads", "checkpoint_every", "checkpoint_seconds",
                  "keep_checkpoints", "amp")


# ----------------------------------------------------------------------------- the fitted model


@dataclass
class Fitted:
    """A trained model with its normalizer (and member offsets): predictions come back in the tensor's units.

    With member offsets the model itself fits x_norm − offset_i; every prediction here
    adds the member's offset back before decoding to the tensor's units.
    """
    kind: str
    model: FactorModel                 # models.registry's protocol: TensorFactorization or a torch model
    normalizer: Normalizer
    device: torch.device
    metrics: list
    offsets: MemberOffsets | None = None

    @property
    def spec(self) -> ModelSpec:
        return registry.spec(self.kind)

    def _offset_rows(self, offsets: np.ndarray | torch.Tensor | None) -> torch.Tensor | None:
        return None if offsets is None else torch.as_tensor(offsets, device=self.device, dtype=torch.float32)

    @torch.no_grad()
    def predict(self, i: np.ndarray, t: np.ndarray, batch_size: int = 65536) -> np.ndarray:
        """Faces (B, 136) in original units for (training) members i and seconds t."""
        off = self._offset_rows(None if self.offsets is None else self.offsets.offsets)
        return self._batched(lambda a, b: self.model.predict(a, b), i, t, batch_size, off)

    @torch.no_grad()
    def predict_rows(self, codes: torch.Tensor, rows: np.ndarray, t: np.ndarray,
                     batch_size: int = 65536, offsets: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
        """Faces for new members given their codes and offsets (from infer_members), rows indexing both.

        A model fitted with member offsets needs the new members' offsets (R, 136, normalized);
        without them the audience's average offset is used.
        """
        if self.offsets is not None and offsets is None:
            offsets = np.broadcast_to(self.offsets.prior, (len(codes), len(self.offsets.prior)))
        return self._batched(lambda a, b: self.model.predict_rows(codes[a], b), rows, t, batch_size,
                             self._offset_rows(offsets))

    @torch.no_grad()
    def encode(self, landmarks: np.ndarray, rows: np.ndarray | None = None) -> np.ndarray:
        """Faces (…, 136) in the tensor's units → what the model fits (normalized, minus the member offset).

        landmarks (N, T, 136) for the training members, or (B, 136) faces with `rows` their members.
        """
        x = self.normalizer.encode(landmarks)
        if self.offsets is None:
            return x
        off = self.offsets.offsets if rows is None else self.offsets.offsets[rows]
        return x - (off[:, None] if rows is None else off)

    @torch.no_grad()
    def decode(self, x_model: torch.Tensor, rows: np.ndarray | None = None) -> np.ndarray:
        """The inverse of encode for faces (B, 136) of members `rows`."""
        if self.offsets is not None and rows is not None:
            x_model = x_model + torch.as_tensor(self.offsets.offsets[rows], device=x_model.device)
        return self.normalizer.decode(x_model.float()).cpu().numpy()

    def _batched(self, fn: Callable, i: np.ndarray, t: np.ndarray, batch_size: int,
                 offsets: torch.Tensor | None = None) -> np.ndarray:
        self.model.eval()
        out = []
        for s in range(0, len(i), batch_size):
            a = torch.as_tensor(i[s:s + batch_size], device=self.device, dtype=torch.long)
            b = torch.as_tensor(t[s:s + batch_size], device=self.device, dtype=torch.long)
            x = fn(a, b).float()
            if offsets is not None:
                x = x + offsets[a]
            out.append(self.normalizer.decode(x).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.normalizer.mean)), np.float32)


# ----------------------------------------------------------------------------- entry point


def discard_checkpoints(out_dir: Path) -> None:
    """Forget a model's training under out_dir (--force): the next fit_model starts from scratch."""
    import shutil

    shutil.rmtree(Path(out_dir) / "checkpoints", ignore_errors=True)


def fit_model(kind: str, movie: Movie, train_mask: np.ndarray, models_cfg: ModelsConfig,
              train_cfg: TrainConfig, out_dir: Path, *, resume: bool = False, split: dict | None = None,
              on_epoch_end: Callable[[int], None] | None = None) -> Fitted:
    """Train model `kind` on the faces where `train_mask` is True; checkpoints go under out_dir.

    resume=False refuses a folder that already holds checkpoints (it names the
    fix); resume=True continues from its `last` checkpoint (or loads the
    finished model) after checking that configuration and data are the same.
    """
    spec = registry.spec(kind)         # an unknown name: ValueError naming the choices
    if train_mask.shape != movie.mask.shape or (train_mask & ~movie.mask).any():
        raise DataError("the training mask must be (N, T) and select only observed faces")
    if not train_mask.any():
        raise DataError("the training mask selects no face; nothing to fit")
    if spec.factorized:            # K factors per member and per second need K of each
        check_k_supported(models_cfg.k, train_mask)
    device = pick_device(train_cfg.device)
    fingerprint = _fingerprint(kind, movie, train_mask, models_cfg, train_cfg, split or {})
    folder = Path(out_dir) / "checkpoints"
    saved = ckpt.load_last(folder)
    if saved is not None and not resume:
        raise ValueError(f"{folder} already holds checkpoints. Pass --resume (resume=True) to continue "
                         f"that run, or choose a new --run-dir.")
    if saved is not None:
        ckpt.check_same_config(_offsets_checked(saved, models_cfg.member_offsets, folder), fingerprint, folder)
    normalizer = Normalizer.fit(movie.landmarks, train_mask, per_member=models_cfg.member_offsets,
                                per_coordinate=models_cfg.coordinate_scale == "noise")
    x_norm = normalizer.encode(movie.landmarks)
    fit_mask, val_mask = validation_split(train_mask, train_cfg.validation_every, train_cfg.seed)
    # the offsets come from the faces the model is fitted to, never from the held-back ones
    offsets = MemberOffsets.fit(x_norm, fit_mask) if models_cfg.member_offsets else None
    faces = Faces(minus_offsets(x_norm, offsets), fit_mask, device, movie=movie)
    val = None if val_mask is None else Validation(faces, val_mask)
    with cpu_threads(train_cfg.cpu_threads if device.type == "cpu" else 0):
        if spec.trainer == "als":
            return _fit_tf(faces, val, train_mask, x_norm, normalizer, offsets, models_cfg, train_cfg, folder,
                           fingerprint, saved)
        return _fit_torch(kind, faces, val, train_mask, normalizer, offsets, models_cfg, train_cfg, Path(out_dir),
                          fingerprint, saved, on_epoch_end)


def supported_k(train_mask: np.ndarray) -> int:
    """The largest K the training faces support: K factors per member and per second need at
    least K members and K seconds with faces (else the factorization is not identifiable)."""
    return int(min(train_mask.any(1).sum(), train_mask.any(0).sum()))


def check_k_supported(k: int, train_mask: np.ndarray) -> None:
    most = supported_k(train_mask)
    if k > most:
        raise DataError(f"models.k={k} is more than this tensor supports: its training faces cover "
                        f"{int(train_mask.any(1).sum())} members and {int(train_mask.any(0).sum())} seconds, and "
                        f"K factors need at least K of each. Use models.k={most} or less (or drop the larger "
                        f"values from evaluate.ks), or train on a longer movie / a larger audience.")


def minus_offsets(x_norm: np.ndarray, offsets: MemberOffsets | None) -> np.ndarray:
    """(N, T, 136) normalized faces minus each member's offset (unchanged without offsets)."""
    return x_norm if offsets is None else x_norm - offsets.offsets[:, None]


class Validation:
    """Held-back training faces (validation_split) and the error of a model's prediction on them.

    The error is the completion metric in normalized units: squared error summed over the
    136 coordinates of f(U_i∘V_t) against the face (both minus the member's offset when
    offsets are on), per face. Deterministic: it draws no random numbers.

    A fit replaces the one kept so far only when it is better by more than one standard
    error of the paired per-face difference (`better`): landmark errors are heavy-tailed,
    and picking the minimum of many noisy validation scores would otherwise keep fits that
    merely got lucky on a few held-back faces (on a tensor with no learnable expression,
    the member offsets alone stay kept).
    """

    def __init__(self, faces: Faces, val_mask: np.ndarray):
        i_idx, t_idx = np.nonzero(val_mask)
        self.i = torch.from_numpy(i_idx).long().to(faces.device)
        self.t = torch.from_numpy(t_idx).long().to(faces.device)
        self.x = faces.x[self.i, self.t]
        self.n = len(i_idx)

    @torch.no_grad()
    def errors(self, predict: Callable, batch_size: int = 65536) -> torch.Tensor:
        """(n,) float64 squared error per held-back face, on the CPU."""
        out = []
        for s in range(0, self.n, batch_size):
            pred = predict(self.i[s:s + batch_size], self.t[s:s + batch_size]).float()
            out.append(((pred - self.x[s:s + batch_size]) ** 2).sum(-1).double().cpu())
        return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)

    @staticmethod
    def better(new: torch.Tensor, old: torch.Tensor) -> bool:
        """True when `new` errors beat `old` by more than one standard error of their paired difference."""
        d = new - old
        se = float(d.std()) / len(d) ** 0.5 if len(d) > 1 else 0.0
        return float(d.mean()) < -se


def _offsets_checked(saved: dict, wanted: bool, folder: Path) -> dict:
    """The checkpoint's fingerprint, after refusing (with the fix) a different member-offset setting.

    A checkpoint written before member offsets existed fitted raw faces: it counts as
    member_offsets=false (resumable under that setting, refused under true).
    """
    fingerprint = dict(saved["fingerprint"])
    had = bool(fingerprint.setdefault("member_offsets", False))
    if had != bool(wanted):
        what = "fitted raw faces (models.member_offsets=false" + (
            ", saved before member offsets existed)" if "member_offsets" not in saved["fingerprint"] else ")")
        if had:
            what = "fitted faces minus each member's offset (models.member_offsets=true)"
        raise ValueError(f"{folder} holds a model that {what}, but the configuration now says "
                         f"models.member_offsets={str(wanted).lower()}. Rerun with "
                         f"models.member_offsets={str(had).lower()}, or start a new run with another --run-dir.")
    return fingerprint


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
            "train_mask_sha": hashlib.sha256(np.packbits(train_mask).tobytes()).hexdigest()[:16],
            # a tensor rebuilt with other vision settings but the same mask must not resume old models
            # hashed through the buffer, not .tobytes(): no second copy of a paper-sized tensor
            "landmarks_sha": hashlib.sha256(np.ascontiguousarray(movie.landmarks)).hexdigest()[:16]}
    spec = registry.spec(kind)
    if spec.trainer == "als":
        model = {"k": models_cfg.k, "tf": to_dict(models_cfg.tf), "seed": train_cfg.seed,
                 "member_offsets": models_cfg.member_offsets, "validation_every": train_cfg.validation_every,
                 "coordinate_scale": models_cfg.coordinate_scale}
    else:
        # the shared settings and this model's own section; the other models' sections do not shape it
        others = {"names", "tf", *(f for f in registry.config_fields() if f != spec.config_field)}
        model = {k: v for k, v in to_dict(models_cfg).items() if k not in others}
        section = getattr(models_cfg, spec.config_field) if spec.config_field else None
        inputs = {key: getattr(section, key) for key in spec.files if getattr(section, key, None)}
        if inputs:      # the contents of the model's input files, not only their names
            model["file_sha256"] = {key: hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
                                    if Path(path).is_file() else "missing" for key, path in inputs.items()}
        model["train"] = {k: v for k, v in to_dict(train_cfg).items() if k not in RUNTIME_FIELDS}
    return json.loads(json.dumps({"kind": kind, **model, "data": data, "split": split}, default=str))


# ----------------------------------------------------------------------------- TF


def _offsets_state(offsets: MemberOffsets | None) -> dict | None:
    return None if offsets is None else offsets.state()


@torch.no_grad()
def _offsets_for_new_members(model, x: torch.Tensor, train_mask: np.ndarray, offsets: MemberOffsets | None,
                             batch_size: int = 65536) -> MemberOffsets | None:
    """After fitting: the prior and κ that new members' offsets are estimated with (long-term
    prediction), from the fitted model's residuals on all training faces and each training member's
    whole offset (offset plus learned bias). Deterministic."""
    if offsets is None:
        return None
    model.eval()
    i_all, t_all = (torch.from_numpy(a).long().to(x.device) for a in np.nonzero(train_mask))
    sq = 0.0
    for s in range(0, len(i_all), batch_size):
        i, t = i_all[s:s + batch_size], t_all[s:s + batch_size]
        sq += float(((x[i, t] - model.predict(i, t).float()) ** 2).sum())
    counts = train_mask.sum(1)
    within = sq / max(int(counts.sum()) - int((counts > 0).sum()), 1)
    bias = model.learned_member_bias()
    effective = offsets.offsets + (0.0 if bias is None else bias.detach().float().cpu().numpy())
    return offsets.for_new_members(effective, counts, within)


def _fit_tf(faces: Faces, val: Validation | None, train_mask: np.ndarray, x_norm: np.ndarray,
            normalizer: Normalizer, offsets: MemberOffsets | None, models_cfg: ModelsConfig, train_cfg: TrainConfig,
            folder: Path, fingerprint: dict, saved: dict | None) -> Fitted:
    """ALS on the training faces. With validation, the ridge is first chosen from models.tf.ridge_grid
    by the error on the held-back faces of fits to the rest (`faces`), then the model is refitted on
    every training face with it, the member offsets too (TF is cheap; the strongest ridges shrink
    every component away, so the choice includes 'no expression model': each member's offset alone).
    Without validation models.tf.ridge is used."""
    n_members, n_seconds = faces.mask.shape
    cfg = models_cfg.tf
    if saved is not None:
        model = TensorFactorization(**saved["args"], device=faces.device)
        model.load_state_dict(saved["model"])
        return Fitted("tf", model, Normalizer.from_state(saved["normalizer"]), faces.device,
                      saved.get("metrics", []), MemberOffsets.from_state(saved.get("offsets")))
    started = time.perf_counter()
    fit = dict(max_iters=cfg.max_iters, tol=cfg.tol, hals_sweeps=cfg.hals_sweeps, seed=train_cfg.seed)
    ridge, val_by_ridge = (cfg.ridge if val is None else max(cfg.ridge_grid)), {}
    if val is not None and len(set(cfg.ridge_grid)) > 1:
        errors = {}
        for r in sorted(set(cfg.ridge_grid), reverse=True):       # strongest shrinkage first
            trial = TensorFactorization(n_members, n_seconds, models_cfg.k, r, faces.device)
            trial.fit(faces.x, faces.mask, **fit)
            errors[r] = val.errors(trial.predict)
            val_by_ridge[r] = float(errors[r].mean())
            if r == max(cfg.ridge_grid) or Validation.better(errors[r], errors[ridge]):
                ridge = r                                          # a weaker ridge must earn its place
    if val is not None:                                            # refit on every training face
        offsets = MemberOffsets.fit(x_norm, train_mask) if offsets is not None else None
        faces = Faces(minus_offsets(x_norm, offsets), train_mask, faces.device)
    model = TensorFactorization(n_members, n_seconds, models_cfg.k, ridge, faces.device)
    n_train = int(train_mask.sum())
    bar = tqdm(total=cfg.max_iters, desc="tf  ALS", disable=not train_cfg.progress, leave=False)

    def tick(step, loss):
        bar.update()
        bar.set_postfix(loss_per_face=f"{loss / max(n_train, 1):.4f}")

    history = model.fit(faces.x, faces.mask, callback=tick, **fit)
    bar.close()
    seconds = time.perf_counter() - started
    offsets = _offsets_for_new_members(model, faces.x, train_mask, offsets)
    metrics = [{"iteration": n + 1, "recon": 0.5 * loss / n_train} for n, loss in enumerate(history)]
    metrics[-1].update(seconds=round(seconds, 3), ridge=ridge)
    if val_by_ridge:
        metrics[-1]["val_mse_by_ridge"] = {str(r): v for r, v in val_by_ridge.items()}
    payload = {"kind": "tf", "args": model.args(), "model": model.state_dict(), "normalizer": normalizer.state(),
               "offsets": _offsets_state(offsets), "fingerprint": fingerprint, "metrics": metrics,
               "epoch": len(history)}
    ckpt.save(folder, "final.pt", payload)
    _write_metrics(folder.parent, metrics)
    return Fitted("tf", model, normalizer, faces.device, metrics, offsets)


# ----------------------------------------------------------------------------- torch models


def build_torch_model(kind: str, n_members: int, n_seconds: int, models_cfg: ModelsConfig) -> torch.nn.Module:
    """A fresh model `kind` (the registry's spec builds it from models_cfg), on the CPU."""
    return registry.spec(kind).build(n_members, n_seconds, models_cfg)


def make_optimizer(model: torch.nn.Module, train_cfg: TrainConfig) -> torch.optim.Optimizer:
    """AdamW: networks at `lr` (with weight decay), per-member/per-second factors at `factor_lr`; fused on CUDA."""
    factors = [p for n, p in model.named_parameters() if n.startswith("factors.")]
    nets = [p for n, p in model.named_parameters() if not n.startswith("factors.")]
    groups = [{"params": nets, "lr": train_cfg.lr, "weight_decay": train_cfg.weight_decay}]
    if factors:
        groups.append({"params": factors, "lr": train_cfg.factor_lr, "weight_decay": 0.0})
    on_cuda = all(p.is_cuda for p in model.parameters())
    return torch.optim.AdamW(groups, fused=on_cuda or None)    # fused: one kernel per step on the GPU


def kl_beta(models_cfg: ModelsConfig, epoch: int) -> float:
    """β for 1-based `epoch`: linear warm-up over kl_warmup_epochs, then kl_weight."""
    if models_cfg.kl_warmup_epochs <= 0:
        return models_cfg.kl_weight
    return models_cfg.kl_weight * min(1.0, epoch / models_cfg.kl_warmup_epochs)


def _state_copy(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _val_errors(model: torch.nn.Module, faces: Faces, val: Validation) -> torch.Tensor:
    """Held-back errors of the model as it stands (the VAE first refreshes its per-member latents)."""
    model.eval()
    model.finalize(faces)
    out = val.errors(model.predict)
    model.train()
    return out


def _fit_torch(kind: str, faces: Faces, val: Validation | None, train_mask: np.ndarray, normalizer: Normalizer,
               offsets: MemberOffsets | None, models_cfg: ModelsConfig, train_cfg: TrainConfig, out_dir: Path,
               fingerprint: dict, saved: dict | None, on_epoch_end: Callable[[int], None] | None) -> Fitted:
    """Adam epochs over the training faces. With validation, an epoch's model is kept when its
    held-back error beats the one kept so far (Validation.better), starting from epoch 0 (the
    decoder starts at zero, so epoch 0 predicts each member's offset, or the mean face);
    training stops after `patience` epochs without a kept improvement."""
    device = faces.device
    ckpt.seed_everything(train_cfg.seed)
    n_members, n_seconds = faces.mask.shape
    model = build_torch_model(kind, n_members, n_seconds, models_cfg).to(device)
    model.prepare(faces)     # data-derived state (e.g. neutral faces); deterministic, so resuming redoes it
    optimizer = make_optimizer(model, train_cfg)
    generator = torch.Generator(device=device).manual_seed(train_cfg.seed)
    start_epoch, metrics, best, stopped = 0, [], None, False
    if saved is not None:
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        ckpt.set_rng_state(saved["rng"], generator)
        start_epoch, metrics = saved["epoch"], list(saved["metrics"])
        best, stopped = saved.get("best"), bool(saved.get("stopped", False))
    elif val is not None:
        errors = _val_errors(model, faces, val)
        best = {"epoch": 0, "val_mse": float(errors.mean()), "errors": errors, "model": _state_copy(model)}
    loss_fn = _loss_fn(model, train_cfg, device)
    steps_per_epoch = -(-faces.n_observed // train_cfg.batch_size)
    bar = tqdm(total=steps_per_epoch * max(0, train_cfg.epochs - start_epoch), desc=f"{kind:<4}",
               disable=not train_cfg.progress or stopped, leave=False)
    payload, trained = saved, False    # a resumed run's last checkpoint, until a new one is written
    last_save = time.monotonic()
    for epoch in range(start_epoch + 1, train_cfg.epochs + 1):
        if stopped:
            break
        trained = True
        metrics.append(_train_epoch(model, loss_fn, optimizer, faces, train_cfg, kl_beta(models_cfg, epoch),
                                    generator, bar, epoch))
        if val is not None:
            errors = _val_errors(model, faces, val)
            metrics[-1]["val_mse"] = float(errors.mean())
            if Validation.better(errors, best["errors"]):
                best = {"epoch": epoch, "val_mse": metrics[-1]["val_mse"], "errors": errors,
                        "model": _state_copy(model)}
            stopped = 0 < train_cfg.patience <= epoch - best["epoch"]
        due = epoch % train_cfg.checkpoint_every == 0 and time.monotonic() - last_save >= train_cfg.checkpoint_seconds
        if due or epoch == train_cfg.epochs or stopped:
            # a copy: loading the kept epoch below must not change what this checkpoint resumes from
            payload = {"kind": kind, "args": model.args(), "model": _state_copy(model),
                       "optimizer": optimizer.state_dict(), "rng": ckpt.rng_state(generator), "epoch": epoch,
                       "metrics": metrics, "fingerprint": fingerprint, "normalizer": normalizer.state(),
                       "offsets": _offsets_state(offsets), "best": best, "stopped": stopped}
            ckpt.save(out_dir / "checkpoints", f"epoch_{epoch:04d}.pt", payload, train_cfg.keep_checkpoints)
            _write_metrics(out_dir, metrics)
            last_save = time.monotonic()
        if on_epoch_end is not None:
            on_epoch_end(epoch)
    bar.close()
    if best is not None:
        model.load_state_dict(best["model"])
        if metrics:
            metrics[-1]["best_epoch"] = best["epoch"]
    model.eval()
    model.finalize(faces)   # deterministic post-training step (the VAE's per-member latents)
    offsets = _offsets_for_new_members(model, faces.x, train_mask, offsets)
    # the kept model is saved after training, and also when a kill came between the last epoch's
    # checkpoint and this save (a resumed run that finds every epoch done but no "final")
    if payload is not None and (trained or "final" not in payload) and (
            model.finalize_sets_state or best is not None or offsets is not None):
        payload = {**payload, "final": _state_copy(model), "metrics": metrics, "offsets": _offsets_state(offsets)}
        ckpt.save(out_dir / "checkpoints", f"epoch_{payload['epoch']:04d}.pt", payload, train_cfg.keep_checkpoints)
        _write_metrics(out_dir, metrics)
    return Fitted(kind, model, normalizer, device, metrics, offsets)


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
    # a checkpoint from before member offsets has no "offsets": it fitted raw faces, so None is right
    offsets = MemberOffsets.from_state(saved.get("offsets"))
    if saved.get("fingerprint", {}).get("member_offsets") and offsets is None:
        raise ValueError(f"{folder}: the checkpoint was trained with member offsets but does not hold them; "
                         f"it is incomplete. Retrain the model (delete {folder} or use another --run-dir).")
    model = registry.spec(saved["kind"]).load(saved["args"], dev)
    # "final": the model kept after training (best validation epoch, VAE latents set); else the last state
    state = saved.get("final") or (saved["best"]["model"] if saved.get("best") else saved["model"])
    model.load_state_dict(state)
    model.eval()
    return Fitted(saved["kind"], model, normalizer, dev, saved.get("metrics", []), offsets)


__all__ = ["Fitted", "fit_model", "load_fitted", "build_torch_model", "kl_beta"]
