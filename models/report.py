"""One report per run: report.html (open in a browser) and report.md, both linking the PNGs.

It gathers what the protocols left in the run folder: data summary, the
completion table and figures, and, when they were run, the K sweep, long-term
prediction and factor figures, plus the resolved configuration.
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


def _blocks(run_dir: Path) -> list[tuple[str, object]]:
    run_dir = Path(run_dir)
    blocks: list[tuple[str, object]] = []
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
        if kind == "h2":
            out.append(f"<h2>{esc(body)}</h2>")
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
