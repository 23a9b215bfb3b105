#!/usr/bin/env python3
"""Leave-one-category-out estimate of `meterlake detect`'s NAB score: how its defaults would
score on a category nobody tuned them on.

Protocol (fixed before any figure was looked at):
- the labelled categories are artificialWithAnomaly, realAWSCloudwatch and realTraffic;
  artificialNoAnomaly has no windows and counts only through its false positives, so it is
  in every training set and in no held-out score;
- for each labelled category C: every setting of the grid is scored (NAB standard profile,
  normalised) on the two other labelled categories plus artificialNoAnomaly, the best one is
  chosen, and C is scored with it;
- the expected score is the mean of the three held-out scores; it is printed with the
  setting each fold chose and the false positives per file;
- only then is the setting fitted on all four categories printed: that is the one to ship.

The grid holds the detect flags a user would tune (threshold, cooldown, detector set, the
likelihood window); the shipped defaults are scored too, for reference.

usage: loco.py BIN NAB_DIR [--quick]   (needs pandas; about 2 s per setting)
"""
import itertools, json, os, sys, tempfile
from concurrent.futures import ThreadPoolExecutor
import nabscore

LABELLED = ["artificialWithAnomaly", "realAWSCloudwatch", "realTraffic"]
NOISE = "artificialNoAnomaly"

# Each axis lists its choices, each choice the detect args it adds.
GRID = [
    [["--threshold", t] for t in ["3", "3.5", "4", "5"]],
    [["--cooldown", c] for c in ["3h", "12h", "1d"]],
    [["--detectors", d] for d in ["seasonal,velocity", "seasonal"]],
    [[]] + [["--likelihood", p, "--likelihood-points", k]
            for p, k in [("1e-3", "3"), ("1e-4", "3"), ("1e-3", "10")]],
    [["--seen-before", x] for x in ["off", "0", "0.25", "0.5", "1"]],
    [["--level-shift", x] for x in ["0", "2h"]],
]


def settings(grid):
    for choice in itertools.product(*grid):
        yield tuple(tuple(c) for c in choice)


def args_of(setting):
    return [x for c in setting for x in c]


def main():
    binary, nab = sys.argv[1], sys.argv[2]
    windows, files = nabscore.load(nab)
    keys_of = lambda cats: [k for k in files if nabscore.category(k) in cats]
    grid = list(settings(GRID))
    with tempfile.TemporaryDirectory() as d:
        inp = os.path.join(d, "series.csv")
        nabscore.write_series(files, inp)
        def run(setting):
            return nabscore.score_files(files, windows, nabscore.detect(binary, inp, args_of(setting)))
        with ThreadPoolExecutor(2) as pool:
            results = dict(zip(grid, pool.map(run, grid)))
        default = run(())
    folds = []
    for held in LABELLED:
        train = keys_of([c for c in LABELLED if c != held] + [NOISE])
        best = max(grid, key=lambda s: (nabscore.normalised(results[s], train), s))
        test = keys_of([held])
        folds.append({"held_out": held, "chosen": " ".join(args_of(best)),
                      "train_score": round(nabscore.normalised(results[best], train), 1),
                      "held_out_score": round(nabscore.normalised(results[best], test), 1),
                      "held_out_false_positives": sum(results[best][k]["fps"] for k in test),
                      "held_out_files": len(test)})
    expected = sum(f["held_out_score"] for f in folds) / len(folds)
    everything = list(files)
    final = max(grid, key=lambda s: (nabscore.normalised(results[s], everything), s))
    def summary(per):
        return {"score": round(nabscore.normalised(per, everything), 1),
                "by_category": {c: (lambda v: None if v is None else round(v, 1))(
                    nabscore.normalised(per, keys_of([c]))) for c in LABELLED},
                "detected": sum(p["detected"] for p in per.values()),
                "windows": sum(p["windows"] for p in per.values()),
                "false_positives": sum(p["fps"] for p in per.values()),
                "false_positives_per_file": round(sum(p["fps"] for p in per.values()) / len(per), 2)}
    print(json.dumps({
        "settings_in_grid": len(grid),
        "folds": folds,
        "expected_score": round(expected, 1),
        "fitted_on_all": {"setting": " ".join(args_of(final)), **summary(results[final])},
        "shipped_defaults": summary(default),
        "shipped_defaults_false_positives_per_file": {k: p["fps"] for k, p in default.items()},
    }, indent=1))


if __name__ == "__main__":
    main()
