"""The model contract (models/registry.py): every registered model follows the protocol, and a
new model added by one registry entry trains, resumes, completes, infers new members and
predicts through the same code as the others, with no change to train/evaluate/predict."""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from models_fixtures import tiny_config, tiny_tensor  # noqa: E402

from models import registry  # noqa: E402
from models.config import ModelsConfig  # noqa: E402
from models.data import completion_split, movie_from_tensor  # noqa: E402
from models.evaluate import completion, infer_members, longterm  # noqa: E402
from models.nets import TorchModel, mean_per_row, seen_faces  # noqa: E402
from models.predict import complete_movie  # noqa: E402
from models.registry import FactorModel, ModelSpec  # noqa: E402
from models.train import fit_model, load_fitted  # noqa: E402


class MemberFace(TorchModel):
    """A toy model: one learned face per member (its code), whatever the second."""
    kind = "member_face"
    finalize_sets_state = False

    def __init__(self, n_members: int, n_seconds: int, k: int, d: int = 136, **_):
        super().__init__()
        self._args = dict(n_members=n_members, n_seconds=n_seconds, k=k, d=d)
        self.face = nn.Parameter(torch.zeros(n_members, d))

    def loss(self, x, i, t, n_obs, beta=1.0):
        recon = ((self.face[i] - x) ** 2).sum(-1).mean()
        return {"loss": recon, "recon": recon}

    def codes(self):
        return self.face

    def predict_rows(self, codes, t):
        return codes

    def predict(self, i, t):
        return self.face[i]

    def decode_latent(self, z):
        return z

    @torch.no_grad()
    def infer_codes(self, x, seen, steps, lr):
        i, _, faces = seen_faces(x, seen)
        return mean_per_row(faces, i, len(x), self.face.mean(0, keepdim=True))


@pytest.fixture
def with_toy(monkeypatch):
    entry = ModelSpec("member_face", f"{__name__}:MemberFace", "toy: a learned face per member", factorized=False)
    monkeypatch.setitem(registry.REGISTRY, entry.name, entry)
    yield entry


def test_every_registered_model_follows_the_protocol():
    cfg = ModelsConfig(k=3, hidden=8, layers=1)
    for name, spec in registry.REGISTRY.items():
        model = spec.build(5, 7, cfg)
        assert isinstance(model, FactorModel), name
        assert model.kind == name
        again = spec.load(model.args(), torch.device("cpu"))
        again.load_state_dict(model.state_dict())
        i, t = torch.tensor([0, 4]), torch.tensor([6, 1])
        with torch.no_grad():
            assert torch.equal(model.predict(i, t), again.predict(i, t)), name


def test_unknown_model_names_the_registered_ones():
    with pytest.raises(ValueError, match="fvae, nltf, tf, vae"):
        registry.spec("lstm")
    with pytest.raises(ValueError, match="choose from"):
        ModelsConfig(names=("tf", "lstm"))


def test_a_model_added_by_one_registry_line_runs_everywhere(with_toy, tmp_path):
    movie = movie_from_tensor(tiny_tensor())
    cfg = tiny_config()
    cfg = cfg.replace(models=dataclasses.replace(cfg.models, names=("member_face", "tf")),
                      train=dataclasses.replace(cfg.train, epochs=4, progress=False))
    res = completion(movie, cfg, tmp_path)
    rows = {r["model"]: r for r in res["rows"]}
    # a learned per-member face on top of the member offsets is the member-mean baseline
    assert rows["member_face"]["test_mse"] == pytest.approx(rows["member mean"]["test_mse"], rel=0.02)
    assert "autoencoder_recon_mse" not in rows["member_face"]          # no encoder: reconstruct() is None
    fitted = load_fitted(tmp_path / "completion" / "member_face", "cpu")
    assert fitted.kind == "member_face" and isinstance(fitted.model, MemberFace)
    # resuming the finished run reuses it
    train_mask, _ = completion_split(movie.mask, cfg.evaluate.holdout_every, cfg.evaluate.seed)
    split = {"protocol": "completion", "holdout_every": cfg.evaluate.holdout_every, "seed": cfg.evaluate.seed}
    again = fit_model("member_face", movie, train_mask, cfg.models, cfg.train, tmp_path / "completion" / "member_face",
                      resume=True, split=split)
    assert torch.equal(again.model.face, fitted.model.face)
    # new-member inference is the model's own
    x = fitted.normalizer.encode(movie.landmarks[:3])
    codes, offsets = infer_members(fitted, x, movie.mask[:3], 5, 0.1)
    assert codes.shape == (3, 136) and offsets.shape == (3, 136)
    pred = complete_movie(fitted, movie)
    assert pred.landmarks.shape == movie.landmarks.shape
    assert np.isfinite(pred.landmarks).all()
    lt = longterm(movie, cfg, tmp_path)
    assert {r["model"] for r in lt["rows"]} >= {"member_face", "tf"}
