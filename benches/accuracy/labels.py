#!/usr/bin/env python3
"""Precision and recall of `meterlake detect --lake` against the generator's labelled
anomalies (labels CSV: tenant_id,meter,start,end,kind, half-open UTC hours).

A label is found when an incident of its tenant and meter (any detector meant for its kind)
overlaps [start - 1 h, end + 1 h). Per kind, precision is the share of incidents of the
kind's detectors that overlap a label (of any kind: a night burst is also a spike): spike -> velocity_spike, seasonal;
night_burst -> off_hours, user_burst; bot -> bot; drop -> velocity_drop; leak -> seasonal
on storage_bytes.

Reported over all incidents, over those of severity medium or worse (strength >= 1.5:
|z| >= 4.5 at the default threshold) and high or critical (strength >= 2.5), since at
|z| > 3 hundreds of hourly series make ordinary statistical outliers that no label covers.

usage: labels.py LAKE LABELS   (after `meterlake detect --lake LAKE`)
"""
import json, sys
import pandas as pd

lake, labels = sys.argv[1], sys.argv[2]
inc = pd.read_parquet(f"{lake}/anomalies/granularity=hour/incidents.parquet")
lab = pd.read_csv(labels, parse_dates=["start", "end"])
H = pd.Timedelta(hours=1)
KIND = {"spike": {"velocity_spike", "seasonal"}, "night_burst": {"off_hours", "user_burst"},
        "bot": {"bot"}, "drop": {"velocity_drop"}, "leak": {"seasonal"}}
inc["window_start"] = pd.to_datetime(inc["window_start"], utc=True)
inc["window_end"] = pd.to_datetime(inc["window_end"], utc=True)
def evaluate(inc):
  dets = inc["detectors"].str.split("+")
  out = {}
  for kind, want in KIND.items():
      mine = inc[dets.apply(lambda d: bool(want & set(d)))]
      if kind == "leak":
          mine = mine[mine["meter"] == "storage_bytes"]
      else:
          mine = mine[mine["meter"] != "storage_bytes"]
      L = lab[lab["kind"] == kind]
      def hits(row, pool):
          return ((pool["tenant_id"] == row.tenant_id) & (pool["meter"] == row.meter)
                  & (pool["window_start"] < row.end + H) & (pool["window_end"] > row.start - H))
      found = sum(bool(hits(r, mine).any()) for r in L.itertuples())
      true_inc = 0
      for r in mine.itertuples():
          m = lab[(lab.tenant_id == r.tenant_id) & (lab.meter == r.meter)
                  & (lab.start - H < r.window_end) & (lab.end + H > r.window_start)]
          true_inc += len(m) > 0
      out[kind] = {"labels": len(L), "recall": round(found / len(L), 3) if len(L) else None,
                   "incidents": len(mine), "precision": round(true_inc / len(mine), 3) if len(mine) else None}
  out["incidents"] = len(inc)
  return out


SEV = {"low": 0, "medium": 1, "high": 2, "critical": 3}
print(json.dumps({"all": evaluate(inc),
                  "medium_or_worse": evaluate(inc[inc["severity"].map(SEV) >= 1].reset_index(drop=True)),
                  "high_or_critical": evaluate(inc[inc["severity"].map(SEV) >= 2].reset_index(drop=True))},
                 indent=1))
