"""An experiment of docs/research/cells.md (the ImageNet-pretrained encoder): alternative choices of the diameter from the logged passes; the ratio
estimate / true median diameter per rule: median, share within 15 %, share within 30 %.
usage: python -m training.experiments.pretrained_cells.rules FILE.jsonl ..."""
import json
import sys

import numpy as np

from piximi_py.estimate import ESTIMATE_AT_SIZE, _near
from training.cells import RECIPE

MD = RECIPE["diameter"]  # the model's own cell diameter (px)


def at_size(p):
    """Whether a logged pass ``[scale, diameter, objects, cover, whole]`` saw its objects at the
    model's size (as piximi_py.estimate._at_size)."""
    return _near(p[0] * p[1], MD, ESTIMATE_AT_SIZE)


def rules(r):
    ps = [p for p in r["passes"] if p[2]]
    sized = [p for p in ps if at_size(p)]
    out = {"current": r["est"]}
    out["median_at_size"] = float(np.median([p[1] for p in sized])) if sized else r["est"]
    out["coarsest_at_size"] = min(sized, key=lambda p: p[0])[1] if sized else r["est"]
    out["closest_to_model"] = min(ps, key=lambda p: abs(np.log(p[0] * p[1] / MD)))[1] if ps else r["est"]
    big = [p for p in ps if p[2] >= 3]
    out["most_cover"] = max(big, key=lambda p: p[3])[1] if big else r["est"]
    return out


def main():
    for f in sys.argv[1:]:
        rows = [json.loads(line) for line in open(f)]
        table = {}
        for r in rows:
            for k, v in rules(r).items():
                table.setdefault(k, []).append((v or 30.0) / r["true"])
        print(f, len(rows))
        for k, v in table.items():
            v = np.array(v)
            print(f"  {k:18s} median {np.median(v):.2f}  within15 {np.mean(abs(v - 1) <= .15):.2f}"
                  f"  within30 {np.mean(abs(v - 1) <= .3):.2f}")


if __name__ == "__main__":
    main()
