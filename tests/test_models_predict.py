"""`audience predict`: the completed movie and new members' movies, as a file plain h5py reads."""
import dataclasses
import re
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from models.data import completion_split, load_movie
from models.evaluate import infer_members
from models.predict import Predictions, prefix_bins, run_predict, source_rows
from models.train import load_fitted
from models.synthetic_tensor import SyntheticSpec, make_synthetic_movie
from pipeline import cli
from pipeline.store import write_movie_tensor

sys.path.insert(0, str(Path(__file__).parent))  # tests/ is not a package: find the fixtures module
from contract import README, check_file, documented_schemas  # noqa: E402
from models_fixtures import TINY_SPEC, write_tiny_tensor  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
TINY = ["models.k=3", "models.hidden=16", "models.layers=2", "models.tf.max_iters=30", "train.epochs=2",
        "train.batch_size=32", "train.device=cpu", "train.progress=false", "evaluate.infer_steps=20"]
STEPS, LR = 20, 0.05


def audience(args, capsys, workspace):
    code = cli.main([*args, "--workspace", str(workspace), *TINY])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run folder with TF and FVAE trained (two epochs) on the completion split of a tiny tensor."""
    root = tmp_path_factory.mktemp("predict")
    tensor = write_tiny_tensor(root).resolve()
    code = cli.main(["train", "--tensor", str(tensor), "--run-dir", str(root / "run"), "--models", "tf,fvae",
                     "--workspace", str(root), *TINY])
    assert code == 0
    return root / "run", tensor


def other_tensor(folder: Path, name: str, **spec) -> Path:
    return write_movie_tensor(folder / name, make_synthetic_movie(dataclasses.replace(TINY_SPEC, **spec))[0])


def read(path: Path) -> dict:
    """Everything in a predictions file, with plain h5py."""
    with h5py.File(path, "r") as f:
        data = {name: f[name].asstr()[()] if h5py.check_string_dtype(f[name].dtype) else f[name][()] for name in f}
        data["attrs"] = dict(f.attrs)
    return data


def all_cells(n, t):
    return np.repeat(np.arange(n), t), np.tile(np.arange(t), n)


def nothing_written(folder: Path) -> bool:
    return not folder.exists() or not any(folder.iterdir())


# ----------------------------------------------------------------------------- the run's own members


@pytest.mark.parametrize("kind", ["tf", "fvae"])
def test_completed_movie_is_the_models_prediction_in_every_cell(run, kind, tmp_path):
    run_dir, tensor = run
    out = run_predict(run_dir, kind=kind, out=tmp_path / f"{kind}.h5", device="cpu", log=lambda _: None)
    assert check_file(out, documented_schemas()["predictions"]) == []
    got = read(out)
    movie = load_movie(tensor)
    fitted = load_fitted(run_dir / "completion" / kind, "cpu")
    n, t = movie.mask.shape
    expected = fitted.predict(*all_cells(n, t)).reshape(n, t, 136)
    assert got["landmarks"].shape == (n, t, 136) and got["landmarks"].dtype == np.float32
    assert not movie.mask.all() and movie.mask.any()           # both observed and missing cells are compared
    np.testing.assert_allclose(got["landmarks"][movie.mask], expected[movie.mask], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got["landmarks"][~movie.mask], expected[~movie.mask], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got["observed"], movie.mask)
    np.testing.assert_array_equal(got["trained_on"], completion_split(movie.mask, 6, 0)[0])
    assert list(got["member_id"]) == list(movie.member_id) and list(got["session_id"]) == list(movie.session_id)
    np.testing.assert_array_equal(got["tensor_row"], np.arange(n))
    attrs = got["attrs"]
    assert (attrs["created_by"], attrs["members"], attrs["model"], attrs["split"], attrs["kind"]) == \
        ("audience predict", "trained", kind, "completion", "predictions")
    assert attrs["tensor"] == str(tensor) and len(attrs["tensor_sha256"]) == 64
    assert attrs["movie"] == movie.name and attrs["units"] == movie.units and attrs["bin_seconds"] == 1.0


def test_split_all_and_members_without_a_face(tmp_path, capsys):
    tensor = make_synthetic_movie(TINY_SPEC)[0]
    tensor.mask[2] = False
    tensor.landmarks[2] = np.nan
    path = write_movie_tensor(tmp_path / "gappy.h5", tensor)
    assert audience(["train", "--tensor", str(path), "--run-dir", str(tmp_path / "run"), "--models", "tf",
                     "--split", "all"], capsys, tmp_path)[0] == 0
    out = run_predict(tmp_path / "run", device="cpu", log=lambda _: None)    # the only model: full/tf
    got = read(out)
    assert out == tmp_path / "run" / "predictions" / "tf.h5"
    assert got["attrs"]["split"] == "all" and got["attrs"]["model_dir"] == str((tmp_path / "run" / "full" / "tf"))
    np.testing.assert_array_equal(got["trained_on"], got["observed"])        # split all: every observed face
    assert list(got["dropped_member_id"]) == [tensor.member_id[2]]
    np.testing.assert_array_equal(got["tensor_row"], [0, 1, 3, 4, 5, 6, 7])
    np.testing.assert_array_equal(got["observed"], tensor.mask[got["tensor_row"]])
    assert list(got["member_id"]) == list(tensor.member_id[got["tensor_row"]])
    np.testing.assert_array_equal(source_rows(path, load_movie(path)), got["tensor_row"])


def test_the_documented_reading_example_runs(run, tmp_path):
    run_dir, tensor = run
    out = run_predict(run_dir, kind="tf", out=tmp_path / "p.h5", device="cpu", log=lambda _: None)
    text = README.read_text().split("## Predictions", 1)[1]
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1)
    assert len(code.strip().splitlines()) <= 6
    scope = {}
    exec(code.replace("data/runs/<run>/predictions/fvae.h5", str(out))
         .replace("data/tensors/<movie>.h5", str(tensor)), scope)
    movie = load_movie(tensor)
    np.testing.assert_array_equal(scope["completed"][movie.mask], movie.landmarks[movie.mask])
    np.testing.assert_array_equal(scope["completed"][~movie.mask], scope["pred"][~movie.mask])
    assert scope["face"].shape == (68, 2)


# ----------------------------------------------------------------------------- new members


@pytest.fixture(scope="module")
def newcomers(run):
    path = other_tensor(run[0].parent, "newcomers.h5", n_members=3, seed=11)
    return path, load_movie(path)


@pytest.mark.parametrize("kind", ["tf", "fvae"])
def test_new_members_from_their_first_seconds(run, newcomers, kind, tmp_path):
    run_dir, _ = run
    path, new = newcomers
    out = run_predict(run_dir, kind=kind, new_members=path, first_seconds=10, out=tmp_path / "new.h5",
                      device="cpu", infer_steps=STEPS, infer_lr=LR, log=lambda _: None)
    assert check_file(out, documented_schemas()["predictions"], expect={"optional"}) == []
    got = read(out)
    fitted = load_fitted(run_dir / "completion" / kind, "cpu")
    seen = new.mask.copy()
    seen[:, 10:] = False
    codes, offsets = infer_members(fitted, fitted.normalizer.encode(new.landmarks), seen, STEPS, LR)
    n, t = new.mask.shape
    ii, tt = all_cells(n, t)
    expected = fitted.predict_rows(codes, ii, tt, offsets=offsets).reshape(n, t, 136)
    np.testing.assert_allclose(got["landmarks"], expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(got["observed"], new.mask)
    np.testing.assert_array_equal(got["trained_on"], seen)
    np.testing.assert_array_equal(got["prefix_faces"], seen.sum(1))
    attrs = got["attrs"]
    assert (attrs["members"], attrs["prefix_bins"], attrs["prefix_seconds"], attrs["infer_steps"]) == \
        ("new", 10, 10.0, STEPS)
    assert attrs["tensor"] == str(path.resolve())
    # the observed prefix matters: codes from more of the movie give other predictions (not the training codes)
    whole = run_predict(run_dir, kind=kind, new_members=path, first_fraction=1.0, out=tmp_path / "all.h5",
                        device="cpu", infer_steps=STEPS, infer_lr=LR, log=lambda _: None)
    assert read(whole)["attrs"]["prefix_bins"] == t
    assert not np.allclose(read(whole)["landmarks"], got["landmarks"])


def test_prefix_rules():
    assert prefix_bins(30, 1.0, first_seconds=10) == 10
    assert prefix_bins(30, 2.0, first_seconds=5) == 2             # bins wholly inside the first 5 s
    assert prefix_bins(30, 1.0, first_fraction=0.1) == 3          # not 4 from 0.1 · 30 = 3.0000000000000004
    assert prefix_bins(30, 1.0, first_fraction=0.25) == 8
    assert prefix_bins(30, 1.0, first_fraction=1.0) == 30
    assert prefix_bins(30, 1.0, first_fraction=1e-6) == 1
    assert prefix_bins(30, 1.0, first_seconds=30) == 30


def test_a_short_new_members_tensor_is_enough_when_it_covers_the_prefix(run, tmp_path):
    path = other_tensor(tmp_path, "short.h5", n_members=2, n_seconds=12, seed=4)
    out = run_predict(run[0], kind="tf", new_members=path, first_seconds=12, out=tmp_path / "p.h5",
                      device="cpu", log=lambda _: None)
    got = read(out)
    assert got["landmarks"].shape == (2, 30, 136) and np.isfinite(got["landmarks"]).all()
    assert got["observed"][:, 12:].sum() == 0 and got["observed"][:, :12].any()


# ----------------------------------------------------------------------------- bad input


def refused(capsys, workspace, args, *needles):
    """The CLI refuses with exit 2, a message naming the problem, no traceback."""
    code, out, err = audience(["predict", *args], capsys, workspace)
    assert code == cli.EXIT_USER_ERROR, (out, err)
    assert err.startswith("error: ") and "Traceback" not in err
    for needle in needles:
        assert needle in err, (needle, err)
    return err


def test_a_tensor_the_run_was_not_trained_on_is_refused(run, tmp_path, capsys):
    run_dir, tensor = run
    out = tmp_path / "out" / "p.h5"
    same_shape = other_tensor(tmp_path, "same_shape.h5", seed=99)
    other_shape = other_tensor(tmp_path, "other_shape.h5", n_members=5)
    refused(capsys, tmp_path, ["--run-dir", str(run_dir), "--tensor", str(same_shape), "--out", str(out)],
            "was not trained on", "other landmark values", f"data_summary.json names {tensor}")
    refused(capsys, tmp_path, ["--run-dir", str(run_dir), "--tensor", str(other_shape), "--out", str(out)],
            "was not trained on", "8×30×136", "5×30×136", "audience train --tensor")
    assert nothing_written(out.parent)


def test_missing_or_untrained_models_are_refused(run, tmp_path, capsys):
    run_dir, tensor = run
    out = tmp_path / "out" / "p.h5"
    refused(capsys, tmp_path, ["--run-dir", str(tmp_path / "nope"), "--out", str(out)], "run folder not found")
    (tmp_path / "empty").mkdir()
    refused(capsys, tmp_path, ["--run-dir", str(tmp_path / "empty"), "--out", str(out)],
            "holds no trained model", "audience train")
    refused(capsys, tmp_path, ["--run-dir", str(run_dir), "--model", "nltf", "--out", str(out)],
            "no trained nltf", "completion/fvae, completion/tf", "--models nltf", str(tensor))
    refused(capsys, tmp_path, ["--run-dir", str(run_dir), "--split", "all", "--out", str(out)],
            "no trained model under full/")
    assert nothing_written(out.parent)


def test_bad_new_members_are_refused(run, newcomers, tmp_path, capsys):
    run_dir, _ = run
    path, _ = newcomers
    out = tmp_path / "out" / "p.h5"
    base = ["--run-dir", str(run_dir), "--out", str(out), "--new-members"]
    wide = tmp_path / "wide.h5"
    with h5py.File(wide, "w") as h5:          # 50 landmarks: another face model
        h5["landmarks"] = np.zeros((2, 30, 100), np.float32)
        h5["mask"] = np.ones((2, 30), bool)
        h5["member_id"] = ["a", "b"]
        h5["session_id"] = ["s", "s"]
    refused(capsys, tmp_path, [*base, str(wide), "--first-seconds", "5"], "100 coordinates", "predicts 136")
    late = make_synthetic_movie(dataclasses.replace(TINY_SPEC, n_members=3, seed=12))[0]
    late.mask[1, :6] = False
    late.landmarks[1, :6] = np.nan
    late_path = write_movie_tensor(tmp_path / "late.h5", late)
    refused(capsys, tmp_path, [*base, str(late_path), "--first-seconds", "6"],
            "1 new member(s) have no observed face in the first 6 s", late.member_id[1], "longer prefix")
    refused(capsys, tmp_path, [*base, str(path), "--first-seconds", "31"], "longer than the movie", "30 s")
    refused(capsys, tmp_path, [*base, str(path), "--first-seconds", "0.5"], "shorter than one time bin")
    refused(capsys, tmp_path, [*base, str(path), "--first-seconds", "0"], "must be > 0")
    refused(capsys, tmp_path, [*base, str(path), "--first-fraction", "0"], "(0, 1]")
    refused(capsys, tmp_path, [*base, str(path), "--first-fraction", "1.5"], "(0, 1]")
    refused(capsys, tmp_path, [*base, str(path)], "--first-seconds S or --first-fraction")
    refused(capsys, tmp_path, [*base[:-1], "--first-seconds", "5"], "--new-members")
    short = other_tensor(tmp_path, "short.h5", n_members=2, n_seconds=8)
    refused(capsys, tmp_path, [*base, str(short), "--first-seconds", "10"], "covers 8 bins", "needs 10")
    slow = make_synthetic_movie(dataclasses.replace(TINY_SPEC, n_members=2))[0]
    slow_path = write_movie_tensor(tmp_path / "slow.h5", dataclasses.replace(slow, bin_seconds=2.0))
    refused(capsys, tmp_path, [*base, str(slow_path), "--first-seconds", "10"], "2 s time bins", "1 s")
    assert nothing_written(out.parent)


def test_a_failure_while_writing_leaves_nothing(run, tmp_path, monkeypatch):
    def broken(self):
        yield 0, np.zeros((1, self.n_seconds, 136), np.float32)
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(Predictions, "blocks", broken)
    with pytest.raises(RuntimeError, match="mid-write"):
        run_predict(run[0], kind="tf", out=tmp_path / "out" / "p.h5", device="cpu", log=lambda _: None)
    assert nothing_written(tmp_path / "out")


# ----------------------------------------------------------------------------- the command line


def test_cli_end_to_end(run, newcomers, tmp_path, capsys):
    run_dir, tensor = run
    code, out, _ = audience(["predict", "--run-dir", str(run_dir)], capsys, tmp_path)
    assert code == 0
    assert "fvae trained on the completion split" in out and str(run_dir / "predictions" / "fvae.h5") in out
    movie = load_movie(tensor)
    got = read(run_dir / "predictions" / "fvae.h5")
    np.testing.assert_array_equal(got["observed"], movie.mask)
    code, out, _ = audience(["predict", "--run-dir", str(run_dir), "--model", "tf", "--split", "completion",
                             "--tensor", str(tensor), "--out", str(tmp_path / "tf.h5")], capsys, tmp_path)
    assert code == 0 and read(tmp_path / "tf.h5")["attrs"]["model"] == "tf"
    code, out, _ = audience(["predict", "--run-dir", str(run_dir), "--new-members", str(newcomers[0]),
                             "--first-fraction", "0.25"], capsys, tmp_path)
    assert code == 0 and "3 new members × 30 bins" in out
    got = read(run_dir / "predictions" / "fvae-new-newcomers.h5")
    assert (got["attrs"]["prefix_bins"], got["attrs"]["infer_steps"]) == (8, 20)


def test_predict_help_and_script(run, tmp_path, capsys):
    from models.cli import standalone_main

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict", "--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for needle in ("audience predict", "section.key=value", "--workspace", "--new-members", "--first-seconds",
                   "--first-fraction", "--model", "--split", "--tensor", "--out"):
        assert needle in text
    code = standalone_main("predict", ["--run-dir", str(run[0]), "--model", "tf", "--out", str(tmp_path / "s.h5"),
                                       "train.device=cpu"])
    assert code == 0 and (tmp_path / "s.h5").is_file()
    assert standalone_main("predict", ["--run-dir", str(tmp_path / "nope")]) == 2
    assert "run folder not found" in capsys.readouterr().out
