"""Where long-term prediction error comes from: the new member's face offset or its codes.

    python bench/bench_longterm_sources.py --run-dir /tmp/protocols      # after:
    python bench/bench_paper_protocols.py --generator independent --movies 0 --protocols longterm --run-dir /tmp/protocols

For each model trained by the long-term protocol, the held-out members' rest of the movie is
predicted four ways: offset and codes both inferred from the first λ (the protocol), the offset
from the whole movie with codes from the prefix, codes from the whole movie with the prefix's
offset, and both from the whole movie. Prints MSE per face ÷ the noise floor.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from bench_paper_protocols import GENERATORS, make_movie
from configs.schema import load_config
from models.data import member_split, mse_per_face, prefix_split
from models.evaluate import infer_codes, infer_members
from models.train import load_fitted

WAYS = ("prefix both", "whole offset", "whole codes", "whole both")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run-dir", required=True, help="the --run-dir given to bench_paper_protocols.py")
    parser.add_argument("--generator", choices=GENERATORS, default="independent")
    parser.add_argument("--movie", type=int, default=0)
    parser.add_argument("--members", type=int, default=60)
    parser.add_argument("--seconds", type=int, default=600)
    parser.add_argument("--lambdas", default="0.05,0.4")
    parser.add_argument("overrides", nargs="*", help="the same config overrides the protocols ran with")
    args = parser.parse_args(argv)
    ev = load_config([], list(args.overrides)).evaluate
    movie, floor, _ = make_movie(args.generator, args.movie, args.members, args.seconds)
    _, test_rows = member_split(movie.n_members, ev.test_member_fraction, ev.seed)
    lm, mask = movie.landmarks[test_rows], movie.mask[test_rows]
    print(f"{args.generator} movie {args.movie}: long-term MSE per face ÷ noise floor, by where offset and codes come from")
    print(f"  {'model':<6}{'λ':>6}" + "".join(f"{w:>15}" for w in WAYS))
    for folder in sorted((Path(args.run_dir) / movie.name / "longterm").iterdir()):
        if not (folder / "checkpoints" / "last").is_file():
            continue
        fitted = load_fitted(folder, "cpu")
        x = fitted.normalizer.encode(lm)
        whole_codes, whole_off = infer_members(fitted, x, mask, ev.infer_steps, ev.infer_lr)
        for lam in (float(v) for v in args.lambdas.split(",")):
            seen, rest, _ = prefix_split(mask, lam)
            ii, tt = np.nonzero(rest)
            codes, off = infer_members(fitted, x, seen, ev.infer_steps, ev.infer_lr)
            if whole_off is not None:      # codes from the prefix, around the whole movie's offset
                codes_around_whole = infer_codes(fitted, np.nan_to_num(x) - whole_off[:, None], seen,
                                                 ev.infer_steps, ev.infer_lr)
            else:
                codes_around_whole = codes
            ways = ((codes, off), (codes_around_whole, whole_off), (whole_codes, off), (whole_codes, whole_off))
            errors = [mse_per_face(fitted.predict_rows(c, ii, tt, offsets=o), lm[ii, tt]) / floor for c, o in ways]
            print(f"  {folder.name:<6}{lam:>6}" + "".join(f"{e:>15.3f}" for e in errors), flush=True)


if __name__ == "__main__":
    main()
