"""One report per run: report.html (open in a browser) and report.md, both linking the PNGs.

First page, for the analyst: what the audience reacted to and when, in plain
words (models/reactions.py, read from the run's tensor; recomputed at every
report), the reaction timeline, the synchronicity figure, the viewer groups,
and, for a tensor made from synthetic screenings, how well this recovers the
known truth. Then, for the specialist, what the protocols left in the run
folder: data summary, completion, K sweep, long-term prediction, factors, and
the resolved configuration.
"""
from __future__ import annotations

import html
import json
import time
from pathlib import Path

from pipeline.store import write_text_atomic

SECTIONS = (
    ("completion", "Matrix completion (paper Table 3)",
     "Per member, one in six observed faces is held out at random. Train = error of the model's "
     "prediction f(U_i∘V_t) on the faces it was fitted to; held-out = on the hidden faces. "
     "MSE per face = squared error summed over the 136 coordinates, in the tensor's units. "
     "With models.member_offsets (the default) every model fits expressions around each member's own "
     "mean training face and adds it back, so 'member mean' is the level a model must beat with the "
     "expressions it predicts; 'kept' names the epoch (or TF ridge) chosen on held-back training faces "
     "(train.validation_every), epoch 0 meaning no expression could be predicted better than the offsets. "
     "'member + time' adds to each member's mean face the audience's mean deviation at that second: "
     "a model of reactions should beat it."),
    ("ksweep", "Latent dimension sweep (paper Fig. 5)", "The completion split, refitted for each K."),
    ("longterm", "Long-term prediction (paper Fig. 9)",
     "Members split 80/20. For each held-out member the first λ of the movie is observed, U_i is "
     "estimated with V and the networks frozen, and the rest of the movie is predicted. "
     "'mean face' predicts the member's mean over the observed prefix; 'time mean' the training "
     "members' mean face at each second; 'member + time' is the additive model member effect + second "
     "effect: the seconds' effects from the training members, the member's from its prefix net of them."),
    ("factors", "Factors (paper Figs. 6–8)",
     "Faces decoded along each latent dimension, V_t over the movie, and k-means clusters of the "
     "rows of U with an exemplar member per cluster. On synthetic tensors, recovery scores: R² of "
     "the true factors regressed on the learned ones, matched |correlation|, and the adjusted Rand "
     "index of the clusters against the true groups. A model kept at epoch 0 (or TF at the "
     "strongest ridge of models.tf.ridge_grid) predicted no expression better than the member offsets: "
     "its figures show its initial or shrunken factors, not reactions."),
)


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def reactions_for_run(run_dir: Path) -> dict | None:
    """Read the reactions from the run's tensor into <run_dir>/reactions/ (tables, figures,
    results.json); None when the run does not name a tensor that still exists."""
    from models import reactions
    from models.data import load_movie
    from pipeline.inspection import plot_synchronicity
    from pipeline.store import read_movie_tensor
    from pipeline.tensor_truth import truth_for_tensor

    summary_path = Path(run_dir) / "data_summary.json"
    if not summary_path.is_file():
        return None
    summary = json.loads(summary_path.read_text())
    tensor = Path(summary.get("tensor", ""))
    if not tensor.is_file():     # a relative path from another folder: try the workspace layout
        tensor = Path(run_dir).resolve().parent.parent / "tensors" / f"{summary.get('movie')}.h5"
    if not tensor.is_file():
        return None
    movie = load_movie(tensor)
    rx = reactions.analyse(movie.landmarks, movie.mask, movie.member_id, movie.session_id, movie.bin_seconds)
    folder = Path(run_dir) / "reactions"
    results = reactions.write_outputs(rx, folder, movie.name, truth_for_tensor(tensor),
                                      movie.landmarks, movie.mask)
    if not rx.too_little:
        sync = plot_synchronicity(read_movie_tensor(tensor), folder / "synchronicity.png")
        results["figures"].append(str(sync))
    results["tensor"] = str(tensor)
    return results


MOMENT_COLUMNS = ("timecode", "reaction", "also", "viewers_reacting", "viewers_present", "strength", "z")


def _reaction_blocks(run_dir: Path, rx: dict | None) -> list[tuple[str, object]]:
    if rx is None:
        return [("h2", "What the audience reacted to"),
                ("p", "Not available: this run folder does not name a tensor that still exists "
                      "(data_summary.json, field 'tensor'). Rerun 'audience evaluate' with the tensor.")]
    blocks: list[tuple[str, object]] = [("h2", "What the audience reacted to"), ("p", " ".join(rx["summary"]))]
    if rx["too_little"]:
        return blocks
    if rx["moments"]:
        blocks += [("p", "Top moments, strongest first. Movie time as min:s (h:min:s past an hour). "
                         "'viewers reacting': viewers whose own face departs by more than twice their usual "
                         "spread at that second; 'strength': the audience's trimmed-mean departure from each "
                         "viewer's resting face, in inter-ocular distances (IOD); 'z': how far that stands out "
                         "of the timeline's second-to-second noise; 'also': other reactions peaking within 2 s."),
                   ("table", [{c: (", ".join(m[c]) if c == "also" else m[c]) for c in MOMENT_COLUMNS}
                              for m in rx["moments"]])]
    what = "; ".join(f"{r['reaction']}: {r['what moves']}" for r in rx["reactions"])
    blocks.append(("p", f"How each reaction is read from the landmarks: {what}. Each is measured against the "
                        "viewer's own resting face (their median over the movie), so face shape and seat cancel."))
    blocks += [("img", _rel(f, run_dir)) for f in rx["figures"] if Path(f).is_file()]
    blocks += [("h3", "Viewer groups")] + [("p", g) for g in rx["groups"]]
    if rx.get("recovery"):
        blocks += [("h3", "Recovered against the known truth (synthetic screenings)"),
                   ("p", "The tensor comes from synthetic screenings, so the true reaction time courses, "
                         "moments and viewer groups are known: correlation of each timeline with its true "
                         "time course, true moments with a reported moment within ±1 s, and the adjusted Rand "
                         "index of the viewer groups against the true ones."),
                   ("table", [{"score": k, "value": v} for k, v in rx["recovery"].items()])]
    files = rx["files"]
    blocks.append(("p", "Exports: per second " + ", ".join(_rel(files[k], run_dir) for k in
                                                             ("reactions_csv", "reactions_parquet"))
                   + "; per viewer " + ", ".join(_rel(files[k], run_dir) for k in ("members_csv", "members_parquet"))
                   + " (data/README.md, 'Reactions')."))
    return blocks


def _rel(path: str, run_dir: Path) -> str:
    try:
        return str(Path(path).relative_to(run_dir))
    except ValueError:
        return str(path)


def _blocks(run_dir: Path) -> list[tuple[str, object]]:
    run_dir = Path(run_dir)
    blocks: list[tuple[str, object]] = _reaction_blocks(run_dir, reactions_for_run(run_dir))
    summary_path = run_dir / "data_summary.json"
    if summary_path.is_file():
        summary = json.loads(summary_path.read_text())
        blocks += [("h2", "Data"), ("table", [{"field": k, "value": _fmt(v) if not isinstance(v, list)
                                               else ", ".join(map(str, v)) or "none"}
                                              for k, v in summary.items()])]
    for name, title, text in SECTIONS:
        results_path = run_dir / name / "results.json"
        if not results_path.is_file():
            continue
        results = json.loads(results_path.read_text())
        blocks += [("h2", title), ("p", text)]
        if results.get("noise_floor") is not None:
            blocks.append(("p", f"Noise floor of this synthetic tensor: {results['noise_floor']:.4g} per face."))
        if results.get("best_k"):
            blocks.append(("p", "K chosen on held-out error: " +
                           ", ".join(f"{k}: {v}" for k, v in results["best_k"].items())))
        blocks.append(("table", results["rows"]))
        blocks += [("img", str(Path(f).relative_to(run_dir))) for f in results.get("figures", [])
                   if Path(f).is_file()]
    config_path = run_dir / "config.yaml"
    if config_path.is_file():
        blocks += [("h2", "Configuration"), ("pre", config_path.read_text())]
    return blocks


def _markdown(blocks, title: str) -> str:
    out = [f"# {title}", ""]
    for kind, body in blocks:
        if kind == "h2":
            out += [f"## {body}", ""]
        elif kind == "h3":
            out += [f"### {body}", ""]
        elif kind == "p":
            out += [body, ""]
        elif kind == "img":
            out += [f"![{Path(body).stem}]({body})", ""]
        elif kind == "pre":
            out += ["```yaml", body.rstrip(), "```", ""]
        elif kind == "table" and body:
            cols = list(dict.fromkeys(k for r in body for k in r))
            out += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
            out += ["| " + " | ".join(_fmt(r.get(c)) for c in cols) + " |" for r in body] + [""]
    return "\n".join(out)


def _html(blocks, title: str) -> str:
    esc = html.escape
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>"
           "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
           "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:3px 8px;"
           "text-align:right}th{background:#eee}img{max-width:100%;margin:.5em 0}"
           "pre{background:#f6f6f6;padding:1em;overflow:auto;max-height:30em}</style></head><body>",
           f"<h1>{esc(title)}</h1>"]
    for kind, body in blocks:
        if kind in ("h2", "h3"):
            out.append(f"<{kind}>{esc(body)}</{kind}>")
        elif kind == "p":
            out.append(f"<p>{esc(body)}</p>")
        elif kind == "img":
            out.append(f"<div><img src='{esc(body)}' alt='{esc(Path(body).stem)}'></div>")
        elif kind == "pre":
            out.append(f"<pre>{esc(body)}</pre>")
        elif kind == "table" and body:
            cols = list(dict.fromkeys(k for r in body for k in r))
            out.append("<table><tr>" + "".join(f"<th>{esc(c)}</th>" for c in cols) + "</tr>")
            out += ["<tr>" + "".join(f"<td>{esc(_fmt(r.get(c)))}</td>" for c in cols) + "</tr>" for r in body]
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(run_dir: Path, title: str | None = None) -> Path:
    """Write <run_dir>/report.html and report.md; return the HTML path."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ValueError(f"run folder {run_dir} does not exist; run 'train' or 'evaluate' first")
    blocks = _blocks(run_dir)
    if not any(kind == "table" for kind, _ in blocks):
        raise ValueError(f"{run_dir} holds no results yet; run 'evaluate --protocol completion' first")
    title = title or f"Audience reactions — run {run_dir.name} ({time.strftime('%Y-%m-%d %H:%M')})"
    write_text_atomic(run_dir / "report.md", _markdown(blocks, title))
    write_text_atomic(run_dir / "report.html", _html(blocks, title))
    return run_dir / "report.html"
