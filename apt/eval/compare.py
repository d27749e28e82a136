"""`apt-bench compare`: stored episodes -> policy x split tables with 95% CIs, gaps to seen, plots.

Three tables (statistics and their pairing: stats.py):
1. success per (suite, policy, split): rate with Wilson 95% CI and seed-clustered CI, episodes, errors;
2. gap of each split to `seen` for the same policy: paired bootstrap 95% CI, McNemar p (NaN where
   the split's tasks are not seen tasks: compositional), and the pairing unit used;
3. language reliance per policy from the control splits blank/shuffled/swapped.

Formats: md (default), csv (one long table with a `table` column; numbers unformatted), latex.
A policy id with several checkpoints in the store is shown as `policy@<sha[:8]>` per checkpoint;
`--across-checkpoints` adds the training-seed view: per policy id and split, the mean and spread of
the checkpoints' success rates over the episodes all of them played, and with `--versus` the
difference of means with a Welch CI over checkpoints (stats.py). Several stores can be read
together (`--store A B`): episodes are keyed by their identity, so one stored in two of them counts
once.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Sequence

import pandas as pd

from apt.eval.stats import (across_checkpoints, cluster_bootstrap_ci, language_reliance, paired_gap,
                            success_table, welch_diff)
from apt.eval.store import read_episodes
from apt.splits.names import CONTROL_SPLITS, SPLITS
from benchmarks.base import BenchError

SEEN = "seen"
NOTE = ("gap = split - seen, paired on (task_id, seed); where the split's tasks are not seen tasks "
        "(compositional) it is paired on seed only and McNemar is not applicable (NaN). Language "
        "reliance = clip(1 - control success / seen success, 0, 1) over blank/shuffled/swapped. "
        "Seed-clustered CI: bootstrap over whole seeds (episodes of one seed share its scene), n/a "
        "under 5 seeds.")


def _split_order(names: Sequence[str]) -> list[str]:
    order = list(SPLITS) + list(CONTROL_SPLITS)
    return sorted(set(names), key=lambda s: (order.index(s) if s in order else len(order), s))


def _label_policies(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    n_ckpt = df.groupby("policy_id")["checkpoint_sha256"].transform("nunique")
    df["policy"] = df["policy_id"].where(n_ckpt <= 1, df["policy_id"] + "@" + df["checkpoint_sha256"].str[:8])
    return df


def versus_table(df: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Each other policy minus `reference`, per suite and split, paired episode by episode (task_id,
    instruction_id, seed): the same scene and instruction, so the CI is on the difference itself
    (paired_gap's bootstrap) and McNemar's pairs are one to one."""
    rows = []
    for suite, g in df.groupby("suite", sort=True):
        ref = g[g["policy"] == reference]
        for policy in sorted(set(g["policy"]) - {reference}):
            p = g[g["policy"] == policy]
            for split in _split_order(g["split"].unique()):
                a, b = p[p["split"] == split], ref[ref["split"] == split]
                if a.empty or b.empty:
                    continue
                unit = ["task_id", "instruction_id", "seed"]
                d = paired_gap(b, a, unit=unit)
                pairs = a.merge(b, on=unit, suffixes=("", "_ref"))
                diff = pairs["success"].to_numpy(float) - pairs["success_ref"].to_numpy(float)
                lo_s, hi_s = cluster_bootstrap_ci(diff, pairs["seed"].to_numpy())
                rows.append({"suite": suite, "policy": policy, "reference": reference, "split": split,
                             "rate": d["split_rate"], "reference_rate": d["seen_rate"], "diff": d["gap"],
                             "lo": d["lo"], "hi": d["hi"], "mcnemar_p": d["mcnemar_p"], "n_units": d["n_units"],
                             "seeds": pairs["seed"].nunique(), "lo_seed": lo_s, "hi_seed": hi_s})
    return pd.DataFrame(rows, columns=["suite", "policy", "reference", "split", "rate", "reference_rate", "diff",
                                       "lo", "hi", "mcnemar_p", "n_units", "seeds", "lo_seed", "hi_seed"])


def common_episodes(df: pd.DataFrame) -> pd.DataFrame:
    """The episodes (suite, split, task, instruction, seed) that every checkpoint in `df` played: the
    training-seed view compares checkpoints on the same episodes, whatever else a store holds for
    one of them (more layouts, the control splits, a run cut short)."""
    ident = ["suite", "split", "task_id", "instruction_id", "seed"]
    ckpt = df["policy_id"] + "\x00" + df["checkpoint_sha256"]
    played = ckpt.groupby([df[c] for c in ident]).transform("nunique")
    return df[played == ckpt.nunique()]


def seeds_versus_table(seeds: pd.DataFrame, reference: str) -> pd.DataFrame:
    """Each other policy id minus `reference` per suite and split: difference of the mean success over
    checkpoints (training seeds), Welch 95% CI over checkpoints."""
    rows = []
    for (suite, split), g in seeds.groupby(["suite", "split"], sort=False):
        ref = g[g["policy_id"] == reference]
        if ref.empty:
            continue
        ref_rates = ref["rates"].iloc[0]
        for _, r in g[g["policy_id"] != reference].iterrows():
            rates = r["rates"]
            d = welch_diff(rates, ref_rates)
            rows.append({"suite": suite, "policy_id": r["policy_id"], "reference": reference, "split": split,
                         "mean": r["mean"], "reference_mean": float(ref["mean"].iloc[0]),
                         "checkpoints": len(rates), "reference_checkpoints": len(ref_rates), **d})
    return pd.DataFrame(rows, columns=["suite", "policy_id", "reference", "split", "mean", "reference_mean",
                                       "checkpoints", "reference_checkpoints", "diff", "lo", "hi", "p"])


def tables(df: pd.DataFrame, versus: str | None = None, across: bool = False) -> dict[str, pd.DataFrame]:
    """The result tables (numeric) from an episodes DataFrame; with `versus`, also each policy's
    paired difference to that reference policy. With `across`, the training-seed tables instead of
    the per-episode difference: checkpoints of one policy id are that policy's training seeds, and
    `versus` names a policy id."""
    df = _label_policies(df)
    succ = success_table(df, by=["suite", "policy", "split"])
    order = _split_order(df["split"].unique())
    succ["_o"] = succ["split"].map(order.index)
    succ = succ.sort_values(["suite", "policy", "_o"]).drop(columns="_o").reset_index(drop=True)
    gaps, rel = [], []
    for (suite, policy), g in df.groupby(["suite", "policy"], sort=True):
        seen = g[g["split"] == SEEN]
        if seen.empty:
            continue
        for split in order:
            if split == SEEN or split not in set(g["split"]):
                continue
            gaps.append({"suite": suite, "policy": policy, "split": split,
                         **paired_gap(seen, g[g["split"] == split])})
        controls = g[g["split"].isin(CONTROL_SPLITS)]
        if not controls.empty:
            rel.append({"suite": suite, "policy": policy, **language_reliance(seen, controls)})
    gap_cols = ["suite", "policy", "split", "split_rate", "seen_rate", "gap", "lo", "hi", "mcnemar_p",
                "pairing", "n_units"]
    rel_cols = ["suite", "policy", "seen_rate", "control_rate", "reliance", "lo", "hi", "controls", "n_units"]
    out = {"success": succ, "gap": pd.DataFrame(gaps, columns=gap_cols),
           "reliance": pd.DataFrame(rel, columns=rel_cols)}
    if across:
        seeds = across_checkpoints(common_episodes(df), by=["suite", "policy_id", "split"])
        seeds["_o"] = seeds["split"].map(order.index)
        seeds = seeds.sort_values(["suite", "policy_id", "_o"]).drop(columns="_o")
        out["training_seeds"] = seeds.reset_index(drop=True)
        if versus is not None:
            if versus not in set(df["policy_id"]):
                raise BenchError(f"--versus {versus!r}: no such policy id in the selected episodes; policy ids: "
                                 f"{', '.join(sorted(set(df['policy_id'])))}")
            out["training_seeds_versus"] = seeds_versus_table(out["training_seeds"], versus)
    elif versus is not None:
        if versus not in set(df["policy"]):
            raise BenchError(f"--versus {versus!r}: no such policy in the selected episodes; policies: "
                             f"{', '.join(sorted(set(df['policy'])))}")
        out["versus"] = versus_table(df, versus)
    return out


def _pct(x: float) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"


def _p(x: float) -> str:
    return "n/a" if x is None or math.isnan(x) else (f"{x:.3g}" if x >= 1e-4 else "<1e-4")


def _with_ci(x: pd.Series, lo: pd.Series, hi: pd.Series) -> list[str]:
    """'34.6 [28.9, 40.8]' per row (percent points)."""
    return [f"{_pct(a)} [{_pct(b)}, {_pct(c)}]" for a, b, c in zip(x, lo, hi)]


def _cis(lo: pd.Series, hi: pd.Series) -> list[str]:
    return [f"[{_pct(a)}, {_pct(b)}]" if not math.isnan(a) else "n/a" for a, b in zip(lo, hi)]


def _versus_columns(v: pd.DataFrame, policy: str, rate: tuple[str, str], reference: tuple[str, str],
                    difference: str) -> dict[str, list[str] | pd.Series]:
    """The leading columns of a difference-to-reference table: suite, split, policy (from column
    `policy`), its rate, the reference and its rate (`(heading, column)` each), and the difference
    with its CI under the heading `difference`."""
    return {"suite": v["suite"], "split": v["split"], "policy": v[policy],
            rate[0]: [_pct(x) for x in v[rate[1]]], "reference": v["reference"],
            reference[0]: [_pct(x) for x in v[reference[1]]],
            difference: _with_ci(v["diff"], v["lo"], v["hi"])}


def formatted(t: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Human-readable versions (percent with CI) for md / latex."""
    s = t["success"]
    succ = pd.DataFrame({"suite": s["suite"], "policy": s["policy"], "split": s["split"],
                         "success % [95% CI]": _with_ci(s["rate"], s["lo"], s["hi"]),
                         "seed-clustered CI": _cis(s["lo_seed"], s["hi_seed"]),
                         "episodes": s["n"], "seeds": s["seeds"], "errors": s["errors"]})
    g = t["gap"]
    gap = pd.DataFrame({"suite": g["suite"], "policy": g["policy"], "split": g["split"],
                        "gap to seen (pts) [95% CI]": _with_ci(g["gap"], g["lo"], g["hi"]),
                        "McNemar p": [_p(p) for p in g["mcnemar_p"]], "paired on": g["pairing"],
                        "units": g["n_units"]})
    r = t["reliance"]
    rel = pd.DataFrame({"suite": r["suite"], "policy": r["policy"],
                        "language reliance [95% CI]": [f"{_r(x)} [{_r(lo)}, {_r(hi)}]"
                                                       for x, lo, hi in zip(r["reliance"], r["lo"], r["hi"])],
                        "seen %": [_pct(x) for x in r["seen_rate"]],
                        "control %": [_pct(x) for x in r["control_rate"]], "controls": r["controls"]})
    out = {"success": succ, "gap": gap, "reliance": rel}
    if "versus" in t:
        v = t["versus"]
        out["versus"] = pd.DataFrame({
            **_versus_columns(v, "policy", ("policy %", "rate"), ("reference %", "reference_rate"),
                              "difference (pts) [95% CI]"),
            "seed-clustered CI": _cis(v["lo_seed"], v["hi_seed"]),
            "McNemar p": [_p(p) for p in v["mcnemar_p"]], "units": v["n_units"], "seeds": v["seeds"]})
    if "training_seeds" in t:
        a = t["training_seeds"]
        out["training_seeds"] = pd.DataFrame({
            "suite": a["suite"], "policy": a["policy_id"], "split": a["split"], "checkpoints": a["checkpoints"],
            "mean ± SD %": [f"{_pct(m)} ± {_pct(sd)}" for m, sd in zip(a["mean"], a["sd"])],
            "min-max %": [f"{_pct(lo)}-{_pct(hi)}" for lo, hi in zip(a["min"], a["max"])],
            "per checkpoint (sha256[:8]: %)": [
                ", ".join(f"{c[:8]}: {_pct(x)}" for c, x in zip(cs, r))
                for cs, r in zip(a["checkpoint_sha256"], a["rates"])],
            "episodes each": a["episodes_per_checkpoint"]})
    if "training_seeds_versus" in t:
        v = t["training_seeds_versus"]
        out["training_seeds_versus"] = pd.DataFrame({
            **_versus_columns(v, "policy_id", ("mean %", "mean"), ("reference mean %", "reference_mean"),
                              "difference of means (pts) [95% Welch CI]"),
            "Welch p": [_p(p) for p in v["p"]],
            "checkpoints": [f"{a} vs {b}" for a, b in zip(v["checkpoints"], v["reference_checkpoints"])]})
    return out


def _r(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f}"


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (no tabulate dependency)."""
    cols = [str(c) for c in df.columns]
    rows = [[str(v) for v in row] for row in df.itertuples(index=False)]
    widths = [max(len(c), *(len(r[i]) for r in rows)) if rows else len(c) for i, c in enumerate(cols)]
    line = lambda cells: "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(cols), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, rows)])


TITLES = {"success": "Success rate per policy and split",
          "gap": "Gap to seen (paired)", "reliance": "Language reliance (control splits)",
          "versus": "Difference to the reference policy (paired per episode: task, instruction, seed)",
          "training_seeds": "Across checkpoints (training seeds): success mean ± SD",
          "training_seeds_versus":
              "Difference to the reference policy across training seeds (Welch CI over checkpoints)"}


def render(t: dict[str, pd.DataFrame], fmt: str) -> str:
    if fmt == "csv":
        long = pd.concat([d.assign(table=name) for name, d in t.items() if not d.empty], ignore_index=True)
        return long[["table", *[c for c in long.columns if c != "table"]]].to_csv(index=False)
    f = formatted(t)
    parts = []
    for name, d in f.items():
        if d.empty:
            continue
        if fmt == "md":
            parts.append(f"### {TITLES[name]}\n\n{markdown_table(d)}\n")
        elif fmt == "latex":
            parts.append(f"% {TITLES[name]}\n" + d.to_latex(index=False, escape=True))
        else:
            raise BenchError(f"unknown format {fmt!r}; use md, csv or latex")
    note = f"\n_{NOTE}_\n" if fmt == "md" else f"% {NOTE}\n"
    return "\n".join(parts) + note


def plot_results(t: dict[str, pd.DataFrame], path: str | Path) -> Path:
    """Success per split per policy (Wilson CI bars) and gap to seen per policy (bootstrap CI bars)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    s, g = t["success"], t["gap"]
    s = s.assign(label=s["policy"] if s["suite"].nunique() == 1 else s["suite"] + "/" + s["policy"])
    g = g.assign(label=g["policy"] if g["suite"].nunique() == 1 else g["suite"] + "/" + g["policy"])
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, df, ycol, title in ((axes[0], s, "rate", "success rate (95% Wilson CI)"),
                                (axes[1], g, "gap", "gap to seen (95% paired bootstrap CI)")):
        splits = _split_order(df["split"].unique()) if len(df) else []
        labels = list(dict.fromkeys(df["label"]))
        width = 0.8 / max(1, len(labels))
        for j, lab in enumerate(labels):
            d = df[df["label"] == lab].set_index("split").reindex(splits)
            x = np.arange(len(splits)) + j * width
            y = d[ycol].to_numpy(float)
            err = np.vstack([y - d["lo"].to_numpy(float), d["hi"].to_numpy(float) - y])
            ax.bar(x, y, width, yerr=np.clip(np.nan_to_num(err), 0, None), capsize=3, label=lab)
        ax.set_xticks(np.arange(len(splits)) + 0.4 - width / 2, splits, rotation=30, ha="right")
        ax.set_title(title)
        ax.axhline(0, color="black", lw=0.8)
        if labels:
            ax.legend(fontsize=8)
    axes[0].set_ylim(0, 1.05)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def read_stores(stores: str | Sequence[str]) -> pd.DataFrame:
    """Episodes of one or several stores; an episode (same key) stored in several counts once."""
    paths = [stores] if isinstance(stores, (str, Path)) else list(stores)
    df = pd.concat([read_episodes(p) for p in paths], ignore_index=True)
    return df.drop_duplicates(subset="key", keep="first").reset_index(drop=True)


def compare(store: str | Sequence[str], suite: str | None = None, policies: Sequence[str] | None = None,
            splits: Sequence[str] | None = None, fmt: str = "md", out: str | None = None,
            plot: str | None = None, versus: str | None = None, across_checkpoints: bool = False) -> int:
    """The `apt-bench compare` entry point; returns the exit code."""
    df = read_stores(store)
    if suite:
        df = df[df["suite"] == suite]
    if policies:
        df = df[df["policy_id"].isin(policies)]
    if splits:
        df = df[df["split"].isin(splits)]
    if df.empty:
        raise BenchError(f"no stored episodes in {store} match suite={suite} policies={policies} "
                         f"splits={splits}; run `apt-bench run` first")
    t = tables(df, versus=versus, across=across_checkpoints)
    text = render(t, fmt)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text(text)
    else:
        sys.stdout.write(text)
    if plot:
        plot_results(t, plot)
    return 0
