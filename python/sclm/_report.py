"""Reports of the task protocols as pandas DataFrames."""
from __future__ import annotations

import json

import pandas as pd


def frame(reports_json: str) -> pd.DataFrame:
    """One row per method (the model, then its baselines): ``task``, ``method``, ``n_cells``,
    a column per metric (``NaN`` where undefined) and ``notes`` (a dict of settings and
    remarks)."""
    rows = []
    for r in json.loads(reports_json):
        row = {"task": r["task"], "method": r["method"], "n_cells": r["n_cells"]}
        for m in r["metrics"]:
            row[m["name"]] = float("nan") if m["value"] is None else m["value"]
        row["notes"] = r.get("notes", {})
        rows.append(row)
    df = pd.DataFrame(rows)
    if len(df):
        df = df.set_index("method")
    return df


def shown(reports_json: str, notes, verbose: bool) -> pd.DataFrame:
    """:func:`frame` of the reports; with ``verbose``, the notes and the table printed first."""
    df = frame(reports_json)
    if verbose:
        for n in notes:
            print(f"sclm: {n}")
        print(df.drop(columns=["notes"]).to_string())
    return df
