"""The model contract: one typed spec per model, a registry keyed by name, one protocol.

Training (models/train.py), the evaluation protocols (models/evaluate.py), prediction
(models/predict.py), the figures and the report reach a model only through its spec
here and the `FactorModel` protocol below; nobody branches on a model's name or probes
it with hasattr. Adding a model touches its own file (a class following the protocol,
built by `from_config`), its config class in models/config.py (when it has settings of
its own) and ONE line of `REGISTRY` below.

This module is light (no torch at import): the CLI reads the model names from it, and a
spec imports its class only when a model is built or loaded.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:       # typing only: importing torch here would slow `audience --help`
    import torch

    from models.config import ModelsConfig
    from models.data import Faces


@runtime_checkable
class FactorModel(Protocol):
    """What every model offers (TF, the torch models; tensors are on the model's device).

    Faces are normalized (models.data.Normalizer), minus each member's offset when the
    run uses member offsets (models.train.Fitted adds them back). `i` are members (rows
    of the training tensor), `t` seconds, `codes` a member's code as `codes()` gives it.
    """
    kind: ClassVar[str]                  # the registry name
    finalize_sets_state: ClassVar[bool]  # finalize() writes state (a checkpoint must hold it)

    @classmethod
    def from_config(cls, n_members: int, n_seconds: int, models_cfg: "ModelsConfig") -> "FactorModel": ...

    @classmethod
    def from_args(cls, args: dict, device: "torch.device") -> "FactorModel": ...

    def args(self) -> dict: ...                         # constructor arguments, saved in checkpoints

    def prepare(self, faces: "Faces") -> None: ...      # before training (and resuming): data-derived state

    def finalize(self, faces: "Faces") -> None: ...     # after training: deterministic post-fit state

    def predict(self, i: "torch.Tensor", t: "torch.Tensor") -> "torch.Tensor": ...         # (B, 136)

    def predict_rows(self, codes: "torch.Tensor", t: "torch.Tensor") -> "torch.Tensor": ...  # (B, 136)

    def codes(self) -> "torch.Tensor": ...              # (N, C) per-member codes of the training members

    def infer_codes(self, x: "torch.Tensor", seen: "torch.Tensor", steps: int, lr: float) -> "torch.Tensor":
        """(R, C) codes of NEW members from their seen faces x (R, T, 136), seen (R, T); all else frozen."""

    def decode_latent(self, z: "torch.Tensor") -> "torch.Tensor": ...   # (B, K) latent → (B, 136)

    def latents(self) -> "tuple[torch.Tensor, torch.Tensor] | None": ...  # (U (N,K), V (T,K)) or None

    def reconstruct(self, x: "torch.Tensor", i: "torch.Tensor") -> "torch.Tensor | None": ...  # None: no encoder

    def learned_member_bias(self) -> "torch.Tensor | None": ...   # (N, 136) learned face bias b_i, or None

    def eval(self) -> Any: ...

    def to(self, device) -> Any: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> Any: ...


@dataclass(frozen=True)
class ModelSpec:
    """One model: where its class is, how it trains and what the protocols may ask of it."""
    name: str
    target: str                               # "module:Class" (imported when first built or loaded)
    summary: str                              # one line for --help and the report
    trainer: Literal["als", "gradient"] = "gradient"   # exact masked ALS (TF) or AdamW epochs (torch)
    config_field: str | None = None           # the ModelsConfig section only this model reads
    factorized: bool = True                   # has U (N,K) and V (T,K) decoded as f(U∘V): the factors protocol
    log_codes: bool = True                    # U is log-normal (k-means and recovery use log U); False: U ≥ 0 as is
    files: tuple[str, ...] = ()               # keys of its config section naming input files: their contents are
                                              # fingerprinted (a changed file is not resumed from old checkpoints)
    encodes_faces: bool = False               # has a per-face encoder: encode_faces(x, i) for training members and
                                              # encode_new(x, seen) for new ones give a latent per face

    def model_class(self) -> type:
        module, name = self.target.split(":")
        return getattr(importlib.import_module(module), name)

    def build(self, n_members: int, n_seconds: int, models_cfg: "ModelsConfig") -> FactorModel:
        """A fresh model for an N × T tensor under `models_cfg` (on the CPU)."""
        return self.model_class().from_config(n_members, n_seconds, models_cfg)

    def load(self, args: dict, device: "torch.device") -> FactorModel:
        """The model a checkpoint's `args` describe, on `device` (weights not loaded yet)."""
        return self.model_class().from_args(args, device)


# ONE line per model. The order is predict's default preference (the first one trained).
REGISTRY: dict[str, ModelSpec] = {s.name: s for s in (
    ModelSpec("fvae", "models.fvae:FVAE", "factorized VAE: q(z|x), prior z ~ N(U_i∘V_t, I), x ~ N(f(z), σ²I)",
              encodes_faces=True),
    ModelSpec("nltf", "models.nltf:NLTF", "non-linear tensor factorization: x ~ N(f(U_i∘V_t), σ²I)"),
    ModelSpec("tf", "models.tf:TensorFactorization", "non-negative CP tensor factorization (masked ALS)",
              trainer="als", log_codes=False),
    ModelSpec("vae", "models.fvae:VAE", "per-face VAE with a N(0, I) prior (no factorization)",
              factorized=False, encodes_faces=True),
    ModelSpec("m1", "models.perceptual_vae:NeutralFaceVAE", "VAE conditioned on the member's neutral face "
              "(Mikheeva et al. M1)", config_field="perceptual", factorized=False, encodes_faces=True),
    ModelSpec("m2", "models.perceptual_vae:TripletVAE", "M1 plus a topological prior from triplets "
              "(Mikheeva et al. M2)", config_field="perceptual", factorized=False, encodes_faces=True,
              files=("triplets",)),
    ModelSpec("m1fvae", "models.perceptual_vae:NeutralFaceFVAE", "the FVAE's U∘V factorization of m1's code "
              "(neutral face as extra input)", config_field="perceptual", encodes_faces=True),
    ModelSpec("sdvae", "models.static_dynamic_vae:StaticDynamicVAE", "static f per member from unordered frames, "
              "dynamic z per face", config_field="static_dynamic", factorized=False, encodes_faces=True),
)}

MODEL_NAMES: tuple[str, ...] = tuple(REGISTRY)


def spec(name: str) -> ModelSpec:
    """The spec of model `name`; an unknown name is a ValueError naming the choices."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown model '{name}'; choose from {', '.join(REGISTRY)}") from None


def config_fields() -> tuple[str, ...]:
    """ModelsConfig sections that belong to one model each (left out of the other models' fingerprints)."""
    return tuple(s.config_field for s in REGISTRY.values() if s.config_field)


__all__ = ["FactorModel", "ModelSpec", "REGISTRY", "MODEL_NAMES", "spec", "config_fields"]
