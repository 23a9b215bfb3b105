#!/usr/bin/env python3
"""NAB score of `meterlake detect` on a Numenta Anomaly Benchmark folder (data/ + labels/).

Scoring: NAB's standard profile, see nabscore.py. Prints the score (all files, and per
category), windows detected, false positives (per detector: the strongest detector at each
flagged point, so a change can be traced to a detector) and per file.

usage: nab.py BIN NAB_DIR [detect args...]
"""
import collections, json, os, sys, tempfile
import nabscore

binary, nab, extra = sys.argv[1], sys.argv[2], sys.argv[3:]
windows, files = nabscore.load(nab)
with tempfile.TemporaryDirectory() as d:
    inp = os.path.join(d, "series.csv")
    nabscore.write_series(files, inp)
    try:
        flags = nabscore.detect(binary, inp, extra)
    except RuntimeError as e:
        sys.exit(str(e))
per = nabscore.score_files(files, windows, flags)
cats = sorted({nabscore.category(k) for k in files})
fp_by = collections.Counter()
for p in per.values():
    fp_by.update(p["fp_by"])
print(json.dumps({
    "score": round(nabscore.normalised(per, list(files)), 1),
    "by_category": {c: {"score": (lambda v: None if v is None else round(v, 1))(
                            nabscore.normalised(per, [k for k in files if nabscore.category(k) == c])),
                        "false_positives": sum(per[k]["fps"] for k in files if nabscore.category(k) == c),
                        "files": sum(1 for k in files if nabscore.category(k) == c)}
                    for c in cats},
    "windows": sum(p["windows"] for p in per.values()),
    "detected": sum(p["detected"] for p in per.values()),
    "false_positives": sum(p["fps"] for p in per.values()),
    "false_positives_by_detector": dict(fp_by.most_common()),
    "per_file": {k: {"score": round(p["s"], 3), "false_positives": p["fps"]} for k, p in per.items()},
}, indent=1))
