"""The expression models of issue 12: m1 (VAE with a neutral face), m2 (plus a triplet prior),
the triplet file, artificial triplets, the labelling helper, and their errors."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))

from models import triplets as T  # noqa: E402
from models.config import ModelsConfig, PerceptualConfig, TrainConfig  # noqa: E402
from models.data import movie_from_tensor  # noqa: E402
from models.evaluate import infer_members  # noqa: E402
from models.independent_tensor import IndependentSpec, make_independent_movie  # noqa: E402
from models.perceptual_vae import neutral_face  # noqa: E402
from models.train import fit_model, load_fitted  # noqa: E402
from pipeline.store import DataError  # noqa: E402


@pytest.fixture(scope="module")
def labelled():
    tensor, truth = make_independent_movie(IndependentSpec(n_members=10, n_seconds=50, seed=3))
    movie = movie_from_tensor(tensor)
    ch = truth["channels"]
    groups = np.stack([np.maximum(ch[..., 0], ch[..., 1]), ch[..., 2], ch[..., 3], ch[..., 4],
                       np.maximum(ch[..., 5], ch[..., 6])], -1)
    labels = np.where(groups.max(-1) < 0.3, 0, 1 + groups.argmax(-1))
    return movie, labels, groups.max(-1)


def _triplet_file(movie, labels, intensity, path: Path, n: int = 200) -> Path:
    ii, tt = np.nonzero(movie.mask)
    idx, w = T.artificial_triplets(labels[ii, tt], intensity[ii, tt], n, seed=0, neutral=0)
    return T.write_triplets(path, T.triplets_from_faces(idx, w, movie.member_id, ii, tt, movie.bin_seconds))


def _cfgs(triplets=None, epochs=2):
    models = ModelsConfig(k=3, hidden=16, layers=1, member_offsets=False,
                          perceptual=PerceptualConfig(triplets=None if triplets is None else str(triplets)))
    return models, TrainConfig(epochs=epochs, progress=False, validation_every=0, batch_size=128)


def test_neutral_face_is_a_calm_real_face_and_ignores_bursts():
    rng = np.random.default_rng(0)
    calm = rng.normal(0, 0.1, (60, 136))
    burst = calm[:20] + 5.0 * rng.normal(size=136)            # a third of the faces: one strong expression
    faces = torch.from_numpy(np.concatenate([calm, burst])).float()
    y, k = neutral_face(faces, 0.2)
    assert torch.equal(y, faces[k]) and k < 60                 # a real face, not one of the burst
    dist = (faces - faces.median(0).values).norm(dim=1)
    assert dist[k] <= torch.quantile(dist, 0.2)


def test_artificial_triplets_follow_the_papers_rules(labelled):
    movie, labels, intensity = labelled
    ii, tt = np.nonzero(movie.mask)
    lab, s = labels[ii, tt], intensity[ii, tt]
    idx, w = T.artificial_triplets(lab, s, 300, seed=1, neutral=0)
    assert len(idx) > 250 and (w == 1).all()
    ref, pos, neg = lab[idx[:, 0]], lab[idx[:, 1]], lab[idx[:, 2]]
    same_class = (ref == pos) & (pos != neg)                   # rule 1
    neutral_rule = (pos == 0) & (ref != 0) & (neg != 0) & (neg != ref)
    within = (ref == pos) & (pos == neg) & (np.abs(s[idx[:, 0]] - s[idx[:, 1]]) < np.abs(s[idx[:, 0]] - s[idx[:, 2]]))
    assert (same_class | neutral_rule | within).all()
    assert same_class.any() and neutral_rule.any() and within.any()


def test_triplet_file_round_trip_and_errors(labelled, tmp_path):
    movie, labels, intensity = labelled
    path = _triplet_file(movie, labels, intensity, tmp_path / "t.csv", 30)
    back = T.read_triplets(path)
    rows, bins, weight, dropped = T.resolve(back, movie.member_id, movie.bin_seconds, movie.mask)
    assert dropped == 0 and movie.mask[rows, bins].all() and len(weight) == len(back)
    text = path.read_text().splitlines()
    (tmp_path / "unknown.csv").write_text("\n".join(text[:2] + ["nobody,1,m000,2,m001,3,1"]) + "\n")
    with pytest.raises(DataError, match="nobody"):
        T.resolve(T.read_triplets(tmp_path / "unknown.csv"), movie.member_id, 1.0, movie.mask)
    i, t = np.argwhere(~movie.mask)[0]
    (tmp_path / "unseen.csv").write_text(
        "\n".join(text[:2] + [f"{movie.member_id[i]},{t},{text[1].split(',')[2]},{text[1].split(',')[3]},"
                              f"{text[1].split(',')[4]},{text[1].split(',')[5]},1"]) + "\n")
    with pytest.raises(DataError, match=f"{movie.member_id[i]} at {t:g} s"):
        T.resolve(T.read_triplets(tmp_path / "unseen.csv"), movie.member_id, 1.0, movie.mask)
    (tmp_path / "bad.csv").write_text(text[0] + "\nm000,one,m001,2,m002,3,1\n")
    with pytest.raises(DataError, match="line 2"):
        T.read_triplets(tmp_path / "bad.csv")


def test_m1_and_m2_train_resume_and_infer_new_members(labelled, tmp_path):
    movie, labels, intensity = labelled
    path = _triplet_file(movie, labels, intensity, tmp_path / "t.csv")
    for kind in ("m1", "m2", "m1fvae"):
        models_cfg, train_cfg = _cfgs(path, epochs=4)
        straight = fit_model(kind, movie, movie.mask, models_cfg, train_cfg, tmp_path / kind)
        half = TrainConfig(**{**train_cfg.__dict__, "epochs": 2})
        fit_model(kind, movie, movie.mask, models_cfg, half, tmp_path / f"{kind}-resumed")
        resumed = fit_model(kind, movie, movie.mask, models_cfg, train_cfg, tmp_path / f"{kind}-resumed", resume=True)
        for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
            assert torch.equal(a, b), kind
        loaded = load_fitted(tmp_path / kind, "cpu")
        assert torch.equal(loaded.model.neutral, straight.model.neutral)
        # each member's neutral face is one of its own observed faces (normalized)
        x = straight.encode(movie.landmarks)
        for i in range(movie.n_members):
            own = torch.from_numpy(x[i][movie.mask[i]])
            assert (own - straight.model.neutral[i]).abs().sum(1).min() < 1e-4
        codes, _ = infer_members(straight, x[:3], movie.mask[:3], 3, 0.05)
        assert codes.shape == (3, 136 + 3)
        assert "triplet" in straight.metrics[-1] if kind == "m2" else "triplet" not in straight.metrics[-1]


def test_bad_input_names_the_member_and_the_fix(labelled, tmp_path):
    movie, labels, intensity = labelled
    mask = movie.mask.copy()
    mask[4, np.flatnonzero(mask[4])[2:]] = False               # member 4 keeps 2 faces
    models_cfg, train_cfg = _cfgs()
    with pytest.raises(DataError, match=rf"{movie.member_id[4]}.*min_faces"):
        fit_model("m1", movie, mask, models_cfg, train_cfg, tmp_path / "few")
    with pytest.raises(DataError, match="models.perceptual.triplets"):
        fit_model("m2", movie, movie.mask, models_cfg, train_cfg, tmp_path / "none")


def test_labelling_helper_round_trip(labelled, tmp_path):
    movie, labels, intensity = labelled
    questions = T.read_triplets(_triplet_file(movie, labels, intensity, tmp_path / "q.csv", 5))
    rows, bins, _, _ = T.resolve(questions, movie.member_id, 1.0, movie.mask)
    out = T.write_question_sheets(movie.landmarks[rows, bins], questions, tmp_path / "sheets", per_sheet=3)
    assert sorted(p.name for p in out.glob("*.png")) == ["sheet_000.png", "sheet_001.png"]
    lines = (out / "answers.csv").read_text().splitlines()
    filled = [lines[0]] + [line + ans for line, ans in zip(lines[1:], ["A", "B", "", "?", "a"])]
    (out / "answers.csv").write_text("\n".join(filled) + "\n")
    got = T.read_answers(out / "answers.csv")
    assert len(got) == 3
    assert list(got.members[0]) == list(questions.members[0])                # A: pos is the first candidate
    assert list(got.members[1]) == [questions.members[1][0], questions.members[1][2], questions.members[1][1]]


def test_sdvae_trains_resumes_and_draws_its_figures(labelled, tmp_path):
    from models.config import StaticDynamicConfig
    from models.static_dynamic_vae import figures

    movie, _, _ = labelled
    models_cfg = ModelsConfig(k=3, hidden=16, layers=2, member_offsets=False,
                              static_dynamic=StaticDynamicConfig(f_dim=3, z_dim=2, n_frames=4, eval_frames=8))
    train_cfg = TrainConfig(epochs=3, progress=False, validation_every=0, batch_size=128)
    straight = fit_model("sdvae", movie, movie.mask, models_cfg, train_cfg, tmp_path / "a")
    fit_model("sdvae", movie, movie.mask, models_cfg, TrainConfig(**{**train_cfg.__dict__, "epochs": 1}), tmp_path / "b")
    resumed = fit_model("sdvae", movie, movie.mask, models_cfg, train_cfg, tmp_path / "b", resume=True)
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert {"kl_z", "kl_f"} <= straight.metrics[-1].keys()
    loaded = load_fitted(tmp_path / "a", "cpu")
    assert torch.equal(loaded.model.member_f, straight.model.member_f) and loaded.model.member_f.abs().sum() > 0
    x = torch.from_numpy(np.nan_to_num(straight.encode(movie.landmarks)))
    z = straight.model.encode_new(x, torch.from_numpy(movie.mask))
    assert z.shape == (int(movie.mask.sum()), 2)
    codes, _ = infer_members(straight, straight.encode(movie.landmarks[:2]), movie.mask[:2], 0, 0.0)
    assert torch.allclose(codes, straight.model.member_f[:2], atol=1e-5)      # same frames, same f
    paths = figures(straight, movie.landmarks[:4], movie.mask[:4], tmp_path / "fig", n_swap=3, points=3)
    assert [p.name for p in paths] == ["sdvae_swap_f.png", "sdvae_sweep_z.png", "sdvae_z_over_time.png"]
    assert all(p.stat().st_size > 1000 for p in paths)
    mask = movie.mask.copy()
    mask[2, np.flatnonzero(mask[2])[3:]] = False
    with pytest.raises(DataError, match=rf"{movie.member_id[2]}.*n_frames"):
        fit_model("sdvae", movie, mask, models_cfg, train_cfg, tmp_path / "few")


def test_benchmark_script_runs_small(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
    import bench_expression_models as bench

    out = tmp_path / "res.json"
    assert bench.main(["--seed", "3", "--members", "12", "--seconds", "80", "--test-fraction", "0.4", "--epochs", "2", "--k", "4",
                       "--warmup", "1",
                       "--triplets", "300", "--workdir", str(tmp_path), "--out", str(out)]) == 0
    import json
    res = json.loads(out.read_text())
    rows = {r["representation"].split(" (")[0]: r for r in res["rows"]}
    assert set(rows) == {"raw landmarks", "PCA", "vae", "m1", "m2", "sdvae"}
    assert rows["raw landmarks"]["member_id_acc"] > 0.9          # raw faces carry identity
    assert all(0 <= r["expression_svm_acc"] <= 1 and 0 <= r["heldout_triplets_satisfied"] <= 1 for r in rows.values())
    assert rows["m2"]["train_faces_per_s"] > 0 and rows["raw landmarks"]["train_faces_per_s"] is None
    assert 0 <= res["static_dynamic"]["sdvae f: NN member ID"] <= 1 and res["test_members"] == 5


def test_m2_refuses_to_resume_after_its_triplet_file_changed(labelled, tmp_path):
    movie, labels, intensity = labelled
    path = _triplet_file(movie, labels, intensity, tmp_path / "t.csv", 100)
    models_cfg, train_cfg = _cfgs(path, epochs=1)
    fit_model("m2", movie, movie.mask, models_cfg, train_cfg, tmp_path / "m2")
    fit_model("m2", movie, movie.mask, models_cfg, train_cfg, tmp_path / "m2", resume=True)     # same file: fine
    _triplet_file(movie, labels, intensity, path, 50)
    with pytest.raises(ValueError, match="file_sha256"):
        fit_model("m2", movie, movie.mask, models_cfg, train_cfg, tmp_path / "m2", resume=True)
