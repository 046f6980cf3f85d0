"""Reactions read from a tensor (models/reactions.py) and the analyst's first page of the report."""
import csv
import json

import numpy as np
import pytest

from models import reactions as R
from pipeline.synthetic.animation import displacement_bases, mean_face

N, T = 48, 240
LAUGH_S, SURPRISE_S = (40, 110, 190), (75, 150)


def _mean_face_136():
    face = mean_face()[:, :2]
    eyes = face[36:42].mean(0), face[42:48].mean(0)
    return ((face - (eyes[0] + eyes[1]) / 2) / np.linalg.norm(eyes[1] - eyes[0])).reshape(-1)


def _burst(peaks, t=T):
    s = np.arange(t, dtype=float)
    out = np.zeros(t)
    for p in peaks:
        out += np.where(s >= p, np.exp(-(s - p) / 3.0), 0.0)
    return out


def audience(seed=0, noise=0.03, gain=1.0, t=T, planted=True, laugh_s=LAUGH_S, surprise_s=SURPRISE_S):
    """N viewers × T s: own face shapes, half laugh strongly at LAUGH_S, the other half raise their
    brows strongly at SURPRISE_S (both react a little to everything), per-face noise, 15 % missing."""
    rng = np.random.default_rng(seed)
    bases = displacement_bases().reshape(4, -1) / 0.53          # mean-face units → eye-centre distances
    group = np.arange(N) % 2
    drive = np.zeros((N, t, 4))
    if planted:
        laugh, surprise = _burst(laugh_s, t), _burst(surprise_s, t)
        drive[:, :, 1] = np.where(group[:, None] == 0, 1.0, 0.3) * laugh
        drive[:, :, 0] = 0.5 * drive[:, :, 1]
        drive[:, :, 2] = np.where(group[:, None] == 1, 1.0, 0.3) * surprise
    faces = (_mean_face_136() + 0.04 * rng.standard_normal((N, 1, 136))
             + gain * drive @ bases + noise * rng.standard_normal((N, t, 136)))
    mask = rng.random((N, t)) > 0.15
    faces[~mask] = np.nan
    sessions = np.where(np.arange(N) < N // 2, "s01", "s02")
    return faces.astype(np.float32), mask, np.array([f"m{i}" for i in range(N)]), sessions, group


def test_planted_reactions_are_recovered_when_and_by_whom():
    x, mask, ids, sessions, group = audience()
    rx = R.analyse(x, mask, ids, sessions)
    laugh, surprise = R.NAMES.index("laugh"), R.NAMES.index("surprise")
    assert np.corrcoef(rx.level[:, laugh], _burst(LAUGH_S))[0, 1] > 0.9
    assert np.corrcoef(rx.level[:, surprise], _burst(SURPRISE_S))[0, 1] > 0.9
    found = {(m["reaction"], m["second"]) for m in rx.moments}
    for s in LAUGH_S:
        assert any(k == "laugh" and abs(t - s) <= 1 for k, t in found), (s, found)
    for s in SURPRISE_S:
        assert any(k == "surprise" and abs(t - s) <= 1 for k, t in found), (s, found)
    assert len(rx.moments) <= 7        # the five planted moments, no flood of noise peaks
    truth = {"v": np.stack([0.5 * _burst(LAUGH_S), _burst(LAUGH_S), _burst(SURPRISE_S), np.zeros(T)], 1),
             "v_names": ["smile", "laugh", "brow_raise", "frown"], "moments_s": [*LAUGH_S, *SURPRISE_S],
             "group": group}
    rec = R.recovery(rx, truth)
    assert rec["true_moments_found"] == 5 and rec["groups_ari"] > 0.8
    words = " ".join(R.describe_groups(rx.resp, rx.groups))
    assert "2 (" in words and "laugh" in words and "surprise" in words


def test_a_surprise_two_seconds_before_a_laugh_is_its_own_moment_and_a_laughs_smile_is_not():
    x, mask, ids, sessions, _ = audience(laugh_s=(60, 152), surprise_s=(150,))
    rx = R.analyse(x, mask, ids, sessions)
    kinds = sorted((m["second"], m["reaction"]) for m in rx.moments)
    assert [k for k in kinds if 145 <= k[0] <= 158] == [(150.0, "surprise"), (152.0, "laugh")], kinds
    laugh_moment = next(m for m in rx.moments if m["second"] == 60.0)
    assert laugh_moment["reaction"] == "laugh" and "smile" in laugh_moment["also"]   # one event, one moment
    assert not any(55 <= m["second"] <= 65 and m is not laugh_moment for m in rx.moments)


def test_noise_alone_reports_no_moment_and_no_groups():
    x, mask, ids, sessions, _ = audience(seed=1, planted=False)
    rx = R.analyse(x, mask, ids, sessions)
    assert rx.moments == []
    assert "No moment stands out" in " ".join(R.summary_sentences(rx))


def test_too_short_a_movie_is_said_in_words():
    x, mask, ids, sessions, _ = audience(t=20)
    rx = R.analyse(x, mask, ids, sessions)
    assert rx.too_little and "at least 30 s" in rx.too_little
    assert rx.moments == [] and (rx.groups == -1).all()


def test_exports_are_one_row_per_second_and_per_viewer(tmp_path):
    import pyarrow.parquet as pq

    x, mask, ids, sessions, _ = audience()
    rx = R.analyse(x, mask, ids, sessions)
    results = R.write_outputs(rx, tmp_path, "film", landmarks=x, mask=mask)
    with open(results["files"]["reactions_csv"]) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == T and rows[40]["timecode"] == "0:40"
    assert float(rows[40]["laugh"]) > float(rows[30]["laugh"])
    table = pq.read_table(results["files"]["reactions_parquet"])
    assert table.num_rows == T and set(rows[0]) == set(table.column_names)
    assert pq.read_table(results["files"]["members_parquet"]).num_rows == N
    assert json.loads((tmp_path / "results.json").read_text())["moments"][0]["timecode"]
    assert all((tmp_path / name).is_file() for name in ("timeline.png", "moment_faces.png"))


@pytest.fixture()
def run_dir(tmp_path):
    from pipeline.store import MovieTensor, write_movie_tensor

    def make(t):
        x, mask, ids, sessions, _ = audience(t=t)
        ws = tmp_path / f"ws{t}"
        path = ws / "tensors" / "film.h5"
        path.parent.mkdir(parents=True)
        write_movie_tensor(path, MovieTensor(movie="film", landmarks=x, mask=mask, member_id=ids,
                                             session_id=sessions, bin_seconds=1.0, units="test"))
        run = ws / "runs" / "r1"
        (run / "completion").mkdir(parents=True)
        (run / "data_summary.json").write_text(json.dumps({"tensor": str(path), "movie": "film"}))
        (run / "completion" / "results.json").write_text(json.dumps({"rows": [{"model": "tf", "test_mse": 0.1}]}))
        return run
    return make


def test_report_opens_with_the_reactions(run_dir):
    from models.report import write_report

    html = write_report(run_dir(T)).read_text()
    first, rest = html.split("<h2>Data</h2>")
    assert "What the audience reacted to" in first and "reactions/timeline.png" in first
    assert "0:40" in first and "reactions/reactions.parquet" in first and "Group 1" in first
    assert "Matrix completion" in rest


def test_report_of_a_too_short_movie_says_so_instead_of_figures(run_dir):
    from models.report import write_report

    html = write_report(run_dir(20)).read_text()
    first = html.split("<h2>Data</h2>")[0]
    assert "no reactions are reported" in first and "<img" not in first
