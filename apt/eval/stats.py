"""Statistics over stored episodes: Wilson CIs, paired gaps to `seen`, language reliance.

All inference is delegated to statsmodels / scipy; this module only decides what is paired with what.

**Success** of a cell (policy x split): successes / episodes, errors counted as failures, with the
Wilson score 95% interval (statsmodels `proportion_confint(method="wilson")`). Wilson treats episodes
as independent; episodes that share a seed share whatever the seed draws (on tabletop: the scene
layout, for every task), so the table also gives a **seed-clustered** 95% CI: a percentile
bootstrap that resamples whole seeds (the ratio of resampled successes to resampled episodes). It is
reported only with at least MIN_CLUSTERS seeds; with fewer it would be a handful of distinct values.

**Gap to seen** (split minus seen, so a drop is negative) for one policy, paired on the scene:
- When every task of the split is a task of `seen` (paraphrased, unseen, the controls), the unit is
  (task_id, seed): the same task in the same initial scene, asked differently. Per unit, the success
  of each split is averaged over its entries (a split may hold several instructions per task). The
  95% CI is a percentile bootstrap over units (scipy `bootstrap`, 2000 resamples, seeded), which
  respects the clustering of several entries per unit. McNemar's test (statsmodels `mcnemar`, exact
  binomial when there are fewer than 25 discordant pairs, else chi-square with continuity correction)
  pairs each split episode with the seen outcome of its unit (binarised by majority when seen holds
  several entries per task); with several entries per task these pairs share a seen episode, so the
  p-value is approximate and the bootstrap CI is the primary result.
- When the task sets differ (compositional: held-out tasks, absent from `seen`), the unit is the
  seed alone: per-seed mean success of the split vs per-seed mean success of seen (same scenes,
  different tasks), bootstrap over seeds. McNemar needs binary pairs of the same task, so it is not
  applicable there and reported as NaN.

**Policy vs reference policy** on one split (`apt-bench compare --versus`): both played the very same
episodes, so the unit is the episode (task_id, instruction_id, seed); the bootstrap resamples
episodes and McNemar's pairs are exact one-to-one pairs. The seed-clustered CI of the difference
resamples whole seeds instead (same rule as for success).

**Language reliance** from the control splits (blank / shuffled / swapped instructions, derived from
seen with the same entries, tasks and seeds): R = clip(1 - C / S, 0, 1), where S is seen success and C
the mean success under the controls on the same (task_id, seed) units. R = 1: without the right
instruction the policy fails (it relies on language); R = 0: it does as well with a wrong or empty
instruction (it ignores language, e.g. a Vision-Action policy, or the language-blind oracle). NaN when
S = 0. 95% CI by a paired percentile bootstrap over units (seen and controls resampled together).

**Across training seeds** (`apt-bench compare --across-checkpoints`): every checkpoint of a policy id
(one per training seed) gives one success rate per split; the table reports their mean, sample SD,
min and max, so the spread is the training-seed variance that no episode-level CI contains. A policy
minus a reference policy is then the difference of the two means with Welch's t 95% CI over
checkpoints (scipy `ttest_ind(equal_var=False)`): with 3 seeds each it is wide, honestly so.
"""

from __future__ import annotations

import warnings
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.stats.contingency_tables import mcnemar
from statsmodels.stats.proportion import proportion_confint

N_BOOT = 2000
BOOT_SEED = 0
CONFIDENCE = 0.95
EXACT_BELOW = 25  # discordant pairs under which McNemar uses the exact binomial test
MIN_CLUSTERS = 5  # fewest seeds a seed-clustered CI is computed from


def wilson(successes: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval; (nan, nan) for n = 0."""
    if n == 0:
        return float("nan"), float("nan")
    lo, hi = proportion_confint(int(successes), int(n), alpha=1 - confidence, method="wilson")
    return float(lo), float(hi)


def cluster_bootstrap_ci(values: np.ndarray, clusters: np.ndarray, n_resamples: int = N_BOOT,
                         seed: int = BOOT_SEED) -> tuple[float, float]:
    """Percentile 95% CI of the mean of `values` when whole clusters are resampled with replacement
    (the estimate of a resample: its summed values over its summed count); (nan, nan) with fewer
    than MIN_CLUSTERS clusters."""
    codes, uniq = pd.factorize(pd.Series(clusters))
    k = len(uniq)
    if k < MIN_CLUSTERS:
        return float("nan"), float("nan")
    sums = np.bincount(codes, weights=np.asarray(values, float), minlength=k)
    counts = np.bincount(codes, minlength=k).astype(float)
    idx = np.random.default_rng(seed).integers(0, k, (n_resamples, k))
    est = sums[idx].sum(axis=1) / counts[idx].sum(axis=1)
    alpha = (1 - CONFIDENCE) / 2
    return float(np.quantile(est, alpha)), float(np.quantile(est, 1 - alpha))


def success_table(df: pd.DataFrame, by: Sequence[str] = ("policy_id", "split")) -> pd.DataFrame:
    """Per group: n, successes, errors, rate, Wilson lo/hi; with a `seed` column also the number of
    seeds and the seed-clustered CI (lo_seed / hi_seed)."""
    by = list(by)
    g = df.groupby(by, sort=True)
    out = g.agg(n=("success", "size"), successes=("success", "sum"),
                errors=("error", lambda e: int((e.fillna("") != "").sum()))).reset_index()
    out["successes"] = out["successes"].astype(int)
    out["rate"] = out["successes"] / out["n"]
    cis = [wilson(k, n) for k, n in zip(out["successes"], out["n"])]
    out["lo"] = [c[0] for c in cis]
    out["hi"] = [c[1] for c in cis]
    if "seed" in df.columns:
        clustered = [(cell["seed"].nunique(), *cluster_bootstrap_ci(cell["success"].to_numpy(float),
                                                                     cell["seed"].to_numpy()))
                     for _, cell in g]
        out["seeds"] = [c[0] for c in clustered]
        out["lo_seed"] = [c[1] for c in clustered]
        out["hi_seed"] = [c[2] for c in clustered]
    return out


def bootstrap_ci(data: tuple[np.ndarray, ...], statistic, n_resamples: int = N_BOOT,
                 seed: int = BOOT_SEED) -> tuple[float, float]:
    """Percentile bootstrap CI of a vectorised statistic over paired samples (resampled jointly)."""
    if len(data[0]) < 2:
        return float("nan"), float("nan")
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore")  # degenerate samples (all equal) give a zero-width CI
        res = sps.bootstrap(data, statistic, n_resamples=n_resamples, paired=True, vectorized=True,
                            confidence_level=CONFIDENCE, method="percentile",
                            rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _mean_diff(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a, axis=axis) - np.mean(b, axis=axis)


def mcnemar_p(split_outcomes: np.ndarray, seen_outcomes: np.ndarray) -> float:
    """McNemar p-value for paired binary outcomes (exact binomial for few discordant pairs)."""
    a = np.asarray(split_outcomes, bool)
    b = np.asarray(seen_outcomes, bool)
    table = [[int(np.sum(a & b)), int(np.sum(a & ~b))], [int(np.sum(~a & b)), int(np.sum(~a & ~b))]]
    discordant = table[0][1] + table[1][0]
    if discordant == 0:
        return 1.0
    exact = discordant < EXACT_BELOW
    return float(mcnemar(table, exact=exact, correction=not exact).pvalue)


def paired_gap(seen: pd.DataFrame, split: pd.DataFrame, n_resamples: int = N_BOOT,
               seed: int = BOOT_SEED, unit: Sequence[str] | None = None) -> dict:
    """Gap split - seen for one policy (see module docstring for the pairing). `unit` overrides the
    pairing key (two policies on one split pair episode by episode: task, instruction and seed)."""
    same_tasks = set(split["task_id"]) <= set(seen["task_id"])
    unit = list(unit) if unit is not None else (["task_id", "seed"] if same_tasks else ["seed"])
    a = split.groupby(unit)["success"].mean().rename("split")
    b = seen.groupby(unit)["success"].mean().rename("seen")
    units = pd.concat([a, b], axis=1, join="inner")
    out = {"pairing": "+".join(unit), "n_units": len(units), "split_rate": float(split["success"].mean()),
           "seen_rate": float(seen["success"].mean())}
    if units.empty:
        return {**out, "gap": float("nan"), "lo": float("nan"), "hi": float("nan"),
                "mcnemar_p": float("nan")}
    x, y = units["split"].to_numpy(float), units["seen"].to_numpy(float)
    out["gap"] = float(x.mean() - y.mean())
    out["lo"], out["hi"] = bootstrap_ci((x, y), _mean_diff, n_resamples, seed)
    if same_tasks:
        seen_bin = (b >= 0.5).rename("seen_bin")
        pairs = split.join(seen_bin, on=unit, how="inner")
        out["mcnemar_p"] = mcnemar_p(pairs["success"].to_numpy(), pairs["seen_bin"].to_numpy())
    else:
        out["mcnemar_p"] = float("nan")  # different tasks: no binary pairs (module docstring)
    return out


def _reliance(s: np.ndarray, c: np.ndarray, axis: int = -1) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = 1.0 - np.mean(c, axis=axis) / np.mean(s, axis=axis)
    return np.clip(r, 0.0, 1.0)


def language_reliance(seen: pd.DataFrame, controls: pd.DataFrame, n_resamples: int = N_BOOT,
                      seed: int = BOOT_SEED) -> dict:
    """R = clip(1 - control success / seen success) on paired (task_id, seed) units, with a CI."""
    unit = ["task_id", "seed"]
    s = seen.groupby(unit)["success"].mean().rename("seen")
    c = controls.groupby(unit)["success"].mean().rename("control")
    units = pd.concat([s, c], axis=1, join="inner")
    out = {"n_units": len(units), "controls": ",".join(sorted(set(controls["split"]))) if len(controls) else ""}
    if units.empty or units["seen"].mean() == 0:
        return {**out, "seen_rate": float(units["seen"].mean()) if len(units) else float("nan"),
                "control_rate": float(units["control"].mean()) if len(units) else float("nan"),
                "reliance": float("nan"), "lo": float("nan"), "hi": float("nan")}
    x, y = units["seen"].to_numpy(float), units["control"].to_numpy(float)
    lo, hi = bootstrap_ci((x, y), _reliance, n_resamples, seed)
    return {**out, "seen_rate": float(x.mean()), "control_rate": float(y.mean()),
            "reliance": float(_reliance(x, y)), "lo": lo, "hi": hi}


def across_checkpoints(df: pd.DataFrame, by: Sequence[str] = ("suite", "policy_id", "split")) -> pd.DataFrame:
    """Per group: the success rate of each checkpoint (training seed), then mean / SD / min / max over
    checkpoints. `rates` holds the per-checkpoint rates (a tuple, ordered as `checkpoint_sha256`)."""
    by = list(by)
    per = df.groupby([*by, "checkpoint_sha256"], sort=True).agg(rate=("success", "mean"), n=("success", "size"))
    rows = []
    for key, g in per.groupby(level=by, sort=True):
        rates = g["rate"].to_numpy(float)
        rows.append({**dict(zip(by, key if isinstance(key, tuple) else (key,))),
                     "checkpoints": len(rates), "mean": float(rates.mean()),
                     "sd": float(rates.std(ddof=1)) if len(rates) > 1 else float("nan"),
                     "min": float(rates.min()), "max": float(rates.max()),
                     "episodes_per_checkpoint": int(g["n"].min()),
                     "rates": tuple(float(r) for r in rates),
                     "checkpoint_sha256": tuple(g.index.get_level_values("checkpoint_sha256"))})
    return pd.DataFrame(rows, columns=[*by, "checkpoints", "mean", "sd", "min", "max", "episodes_per_checkpoint",
                                       "rates", "checkpoint_sha256"])


def welch_diff(rates: np.ndarray, reference_rates: np.ndarray, confidence: float = CONFIDENCE) -> dict:
    """Difference of mean success over checkpoints (policy - reference) with Welch's t CI and p-value;
    NaN CI when either side has fewer than two checkpoints or both have zero spread."""
    a, b = np.asarray(rates, float), np.asarray(reference_rates, float)
    out = {"diff": float(a.mean() - b.mean()), "lo": float("nan"), "hi": float("nan"), "p": float("nan")}
    if len(a) < 2 or len(b) < 2 or (a.std() == 0 and b.std() == 0):
        return out
    res = sps.ttest_ind(a, b, equal_var=False)
    ci = res.confidence_interval(confidence_level=confidence)
    return {**out, "lo": float(ci.low), "hi": float(ci.high), "p": float(res.pvalue)}
