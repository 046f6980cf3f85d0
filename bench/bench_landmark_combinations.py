"""Per-face combinations of the stock and theatre final fits (model selection on validation, issue 8).

Each face: the calibrated head box ±8 %, one theatre refine pass (5 cascade levels) for the box and roll,
then final fits by stock and theatre, each also on the mirrored face. Prints mean / median / gross (> 0.25)
error ÷ eye-centre distance per combination in both looks (the benchmark compositor and
scripts/calibrate_detectors.py's).

    python scripts/train_landmarker.py --validate --out /tmp/val_theatre.dat   # theatre model without the held-out tune identities
    python bench/bench_landmark_combinations.py /tmp/val_theatre.dat validate   # 10 held-out tune identities
"""
import sys
from pathlib import Path
import numpy as np

REPO = Path(__file__).resolve().parents[1]
for p in (REPO, REPO / "bench", REPO / "scripts"):
    sys.path.insert(0, str(p))
import real_theatre as rt
import train_landmarker as tl
from pipeline import landmarks as lm

theatre_path = sys.argv[1] if len(sys.argv) > 1 else "/tmp/val_theatre.dat"
split = sys.argv[2] if len(sys.argv) > 2 else "validate"
n = int(sys.argv[3]) if len(sys.argv) > 3 else 600
tune = sorted(rt.load_faces("tune"), key=lambda c: c.identity)
if split == "validate":
    held = {c.identity for c in tune[3::4]}
    clips = [c for c in tune if c.identity in held]
else:
    clips = rt.load_faces("report")
stock = lm.load_ert_model("", leaf_rank=48)
theatre = lm.load_ert_model(theatre_path, leaf_rank=48)


def mirrored_fit(model, image, box, roll):
    """The pipeline's own mirrored-frame fit (pipeline/landmarks.py), for one face."""
    flipped = np.ascontiguousarray(image[:, ::-1])
    return lm._mirrored_fit(model, flipped, box[None], np.array([roll]), None)[0]


disagreement = lm.mirror_disagreement     # mean point distance ÷ the mean fit's eye-centre distance


for look in ("bench", "other"):
    if look == "bench":
        samples = rt.theatre_face_samples("tune", sizes_px=(17, 22, 30, 41), n=n, seed=1, clips=clips, roll_std_deg=5.0)
    else:
        samples = tl.other_compositor_samples(clips, n, 1)
    front = np.array([s.size_px >= 26 for s in samples])
    rng = np.random.default_rng(0)
    starts = tl.detector_starts(samples, front, rng, "theatre")
    truth = np.array([s.landmarks for s in samples], float)
    fits = {k: [] for k in ("S", "T", "Sm", "Tm")}
    for s, b in zip(samples, starts):
        p0 = lm.ert_predict(theatre, s.image, b[None], levels=5)
        box = lm.ert_boxes_from_landmarks(p0)[0]
        roll = float(lm.eye_roll_rad(p0)[0])
        fits["S"].append(lm.ert_predict(stock, s.image, box[None], roll_rad=np.array([roll]))[0])
        fits["T"].append(lm.ert_predict(theatre, s.image, box[None], roll_rad=np.array([roll]))[0])
        fits["Sm"].append(mirrored_fit(stock, s.image, box, roll))
        fits["Tm"].append(mirrored_fit(theatre, s.image, box, roll))
    F = {k: np.array(v, float) for k, v in fits.items()}

    dST = disagreement(F["S"], F["T"])
    cS, cT = disagreement(F["S"], F["Sm"]), disagreement(F["T"], F["Tm"])
    cand = {
        "stock": F["S"], "theatre": F["T"],
        "avg S,T": (F["S"] + F["T"]) / 2,
        "stock+mirror": (F["S"] + F["Sm"]) / 2,
        "theatre+mirror": (F["T"] + F["Tm"]) / 2,
        "avg all 4": (F["S"] + F["Sm"] + F["T"] + F["Tm"]) / 4,
        "pick lower mirror-disagreement (each +mirror)": np.where((cS < cT)[:, None, None], (F["S"] + F["Sm"]) / 2,
                                                                   (F["T"] + F["Tm"]) / 2),
        "pick lower mirror-disagreement": np.where((cS < cT)[:, None, None], F["S"], F["T"]),
    }
    for tau in (0.1, 0.15, 0.2, 0.3):
        cand[f"stock unless |S-T|>{tau} then theatre"] = np.where((dST > tau)[:, None, None], F["T"], F["S"])
    for tau in (0.02, 0.04, 0.06, 0.1):     # theatre fitted only where stock disagrees with its mirror by > tau
        pick_theatre = (cS > tau) & (cT < cS)
        cand[f"stock+mirror; pick by mirror only where cS>{tau} ({(cS > tau).mean():.0%} of faces)"] = np.where(
            pick_theatre[:, None, None], (F["T"] + F["Tm"]) / 2, (F["S"] + F["Sm"]) / 2)
    print(f"\n## {look} look, {split}, {n} views ({front.sum()} front)")
    print("| combination | mean front | median front | gross front | mean back | median back | gross back |")
    print("|---|---|---|---|---|---|---|")
    for name, est in cand.items():
        err, _ = rt.landmark_errors(est, truth)
        f, b = err[front], err[~front]
        print(f"| {name} | {f.mean():.3f} | {np.median(f):.3f} | {(f > 0.25).mean():.2f} | {b.mean():.3f} | "
              f"{np.median(b):.3f} | {(b > 0.25).mean():.2f} |")
    eS, _ = rt.landmark_errors(F["S"], truth)
    eT, _ = rt.landmark_errors(F["T"], truth)
    from scipy.stats import spearmanr
    print(f"spearman(err stock, mirror disagreement stock) {spearmanr(eS, cS)[0]:.2f}; "
          f"(err theatre, cT) {spearmanr(eT, cT)[0]:.2f}; (err stock, |S-T|) {spearmanr(eS, dST)[0]:.2f}; "
          f"(eS-eT, cS-cT) {spearmanr(eS - eT, cS - cT)[0]:.2f}")
