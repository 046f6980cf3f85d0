"""Protocols, report, CLI glue and the demo's model half on a tiny synthetic tensor."""
import argparse
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from models import cli
from models.data import completion_split, load_movie, movie_from_tensor
from models.evaluate import completion, factors, infer_codes, ksweep, longterm
from models.report import write_report
from models.train import fit_model
from pipeline.store import DataError

sys.path.insert(0, str(Path(__file__).parent))  # tests/ is not a package: find the fixtures module
from models_fixtures import tiny_config, tiny_tensor, with_workspace, write_tiny_tensor  # noqa: E402


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One run folder holding every protocol's output (shared: training once keeps the suite fast)."""
    root = tmp_path_factory.mktemp("run")
    movie = load_movie(write_tiny_tensor(root))
    cfg = tiny_config()
    out = {"completion": completion(movie, cfg, root / "run"), "ksweep": ksweep(movie, cfg, root / "run"),
           "longterm": longterm(movie, cfg, root / "run"), "factors": factors(movie, cfg, root / "run")}
    return root / "run", out, movie


def test_completion_table_has_models_and_baselines(run):
    run_dir, out, _ = run
    names = [r["model"] for r in out["completion"]["rows"]]
    assert names == ["tf", "nltf", "fvae", "member mean", "time mean", "member + time"]
    assert all(np.isfinite(r["test_mse"]) and r["test_mse"] > 0 for r in out["completion"]["rows"])
    assert (run_dir / "completion" / "table.md").is_file() and (run_dir / "completion" / "completion.png").is_file()
    saved = json.loads((run_dir / "completion" / "results.json").read_text())
    assert saved["train_faces"] + saved["test_faces"] == int(run[2].mask.sum())


def test_ksweep_picks_k_on_held_out_error(run):
    _, out, _ = run
    rows = out["ksweep"]["rows"]
    assert sorted({r["k"] for r in rows}) == [2, 3]
    for kind, k in out["ksweep"]["best_k"].items():
        best = min((r for r in rows if r["model"] == kind), key=lambda r: r["test_mse"])
        assert best["k"] == k


def test_longterm_rows_cover_lambdas_and_baselines(run):
    _, out, _ = run
    rows = out["longterm"]["rows"]
    assert {(r["model"], r["lambda"]) for r in rows} >= {(m, lam) for m in ("tf", "fvae", "mean face")
                                                          for lam in (0.05, 0.5)}
    assert all(np.isfinite(r["test_mse"]) for r in rows)


def test_factors_figures_and_truth_scores(run):
    run_dir, out, _ = run
    for kind in ("tf", "nltf", "fvae"):
        for suffix in ("latent_sweep", "v_over_time", "clusters"):
            assert (run_dir / "factors" / f"{kind}_{suffix}.png").is_file()
    completion_kept = {r["model"]: r["kept"] for r in out["completion"]["rows"] if "kept" in r}
    for row in out["factors"]["rows"]:
        assert -1 <= row["group_ari"] <= 1 and row["v_r2"] <= 1
        assert row["kept"] == completion_kept[row["model"]]     # the figures name the fit they show


def test_report_links_existing_figures(run):
    run_dir, _, _ = run
    report = write_report(run_dir)
    text = report.read_text()
    images = re.findall(r"src='([^']+)'", text)
    assert len(images) >= 10 and all((run_dir / img).is_file() for img in images)
    assert "Matrix completion" in text and "Long-term" in text
    assert (run_dir / "report.md").is_file()


def test_new_member_with_no_faces_gets_the_training_mean(tmp_path):
    movie = movie_from_tensor(tiny_tensor())
    cfg = tiny_config()
    fitted = fit_model("fvae", movie, movie.mask, cfg.models, cfg.train, tmp_path)
    x = fitted.normalizer.encode(movie.landmarks[:2])
    codes = infer_codes(fitted, x, np.zeros((2, movie.n_seconds), bool), steps=10, lr=0.05)
    assert torch.allclose(codes, fitted.model.factors.log_u.mean(0, keepdim=True).expand(2, -1), atol=1e-6)
    seen = infer_codes(fitted, x, movie.mask[:2], steps=50, lr=0.05)
    assert not torch.allclose(seen, codes)


def test_cli_register_and_demo(tmp_path):
    tensor = write_tiny_tensor(tmp_path)
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers(dest="command"))
    cfg = with_workspace(tiny_config(), tmp_path / "ws")
    args = parser.parse_args(["train", "--tensor", str(tensor), "--models", "tf,fvae"])
    assert args.handler(args, cfg) == 0
    run_dir = cli.default_run_dir(cli.with_overrides(cfg, args), "synthetic")
    assert run_dir.parent == tmp_path / "ws" / "runs" and (run_dir / "completion" / "fvae" / "checkpoints").is_dir()
    with pytest.raises(DataError, match="--resume"):
        args.handler(args, cfg)
    args = parser.parse_args(["train", "--tensor", str(tensor), "--models", "tf,fvae", "--resume"])
    args.handler(args, cfg)
    report = cli.run_models_demo(cfg, tensor, tmp_path / "demo")
    assert report.is_file() and (tmp_path / "demo" / "factors" / "fvae_latent_sweep.png").is_file()


def test_standalone_script_reports_bad_input(tmp_path, capsys):
    code = cli.standalone_main("evaluate", ["--tensor", str(tmp_path / "missing.h5"),
                                            f"workspace.root={tmp_path}"])
    assert code == 2 and "tensor file not found" in capsys.readouterr().out


def test_default_yaml_matches_the_dataclasses():
    from configs.schema import load_config
    from models.config import EvaluateConfig, ModelsConfig, TrainConfig
    cfg = load_config()
    assert (cfg.models, cfg.train, cfg.evaluate) == (ModelsConfig(), TrainConfig(), EvaluateConfig())
    paper = load_config([Path(__file__).parents[1] / "configs" / "paper.yaml"])
    assert paper.train.batch_size == 10 and paper.train.epochs == 16 and paper.models.layers == 3
    # the paper fits raw faces for a fixed number of epochs: our offsets and validation are off there
    assert not paper.models.member_offsets and paper.train.validation_every == 0
    assert cfg.models.member_offsets and cfg.train.validation_every > 0


def test_protocols_say_when_they_reuse_a_trained_model(run, capsys):
    run_dir, _, movie = run
    capsys.readouterr()
    completion(movie, tiny_config(), run_dir)                    # every model was trained by the fixture
    said = capsys.readouterr().out
    assert said.count("reusing the trained model") == 3 and "fitting" not in said
    completion(movie, tiny_config(epochs=3), run_dir)            # one more epoch asked for: NLTF/FVAE go on
    said = capsys.readouterr().out
    assert said.count("resuming") == 2 and "tf: reusing" in said
