"""Statistics: Wilson CIs, paired gaps (bootstrap + McNemar), language reliance, compare outputs.

References are computed independently here: Wilson by its closed formula, exact McNemar as a
binomial test on the discordant pairs (scipy), the bootstrap by a plain numpy resampling loop.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from apt.eval import compare as cmp  # noqa: E402
from apt.eval.stats import (MIN_CLUSTERS, cluster_bootstrap_ci, language_reliance, mcnemar_p,  # noqa: E402
                            paired_gap, success_table, wilson)
from benchmarks.base import BenchError  # noqa: E402


def wilson_closed(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (47, 96), (480, 500), (1, 1)])
def test_wilson_matches_closed_formula(k, n):
    lo, hi = wilson(k, n)
    rlo, rhi = wilson_closed(k, n)
    assert lo == pytest.approx(rlo, abs=1e-9) and hi == pytest.approx(rhi, abs=1e-9)


def test_wilson_empty_is_nan():
    assert all(math.isnan(x) for x in wilson(0, 0))


def _episodes(policy, split, outcomes: dict, entries_per_task: int = 1) -> pd.DataFrame:
    """outcomes: {(task, seed): success or [successes per entry]}."""
    rows = []
    for (task, seed), s in outcomes.items():
        for j, v in enumerate(s if isinstance(s, list) else [s] * entries_per_task):
            rows.append(dict(policy_id=policy, checkpoint_sha256="", suite="stub", split=split,
                             task_id=task, seed=seed, instruction_id=f"{split}-{task}-{j}", success=bool(v),
                             error=""))
    return pd.DataFrame(rows)


def _random_pairs(n_tasks=6, n_seeds=10, p_seen=0.8, p_split=0.5, rng=0):
    r = np.random.default_rng(rng)
    seen = {(f"t{t}", s): bool(r.random() < p_seen) for t in range(n_tasks) for s in range(n_seeds)}
    split = {(f"t{t}", s): bool(r.random() < p_split) for t in range(n_tasks) for s in range(n_seeds)}
    return seen, split


def _numpy_bootstrap(d: np.ndarray, n=20000, seed=1) -> tuple[float, float]:
    r = np.random.default_rng(seed)
    means = d[r.integers(0, len(d), (n, len(d)))].mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def test_paired_gap_same_tasks_matches_references():
    seen, split = _random_pairs(n_tasks=3)
    g = paired_gap(_episodes("p", "seen", seen), _episodes("p", "paraphrased", split))
    keys = sorted(seen)
    a = np.array([split[k] for k in keys], float)
    b = np.array([seen[k] for k in keys], float)
    assert g["pairing"] == "task_id+seed" and g["n_units"] == len(keys)
    assert g["gap"] == pytest.approx(a.mean() - b.mean())
    rlo, rhi = _numpy_bootstrap(a - b)
    assert g["lo"] == pytest.approx(rlo, abs=0.03) and g["hi"] == pytest.approx(rhi, abs=0.03)
    # Exact McNemar = two-sided binomial test on the discordant pairs.
    n01 = int(np.sum((a == 1) & (b == 0)))
    n10 = int(np.sum((a == 0) & (b == 1)))
    assert n01 + n10 < 25  # the exact branch
    assert g["mcnemar_p"] == pytest.approx(binomtest(n01, n01 + n10, 0.5).pvalue, rel=1e-9)


def test_mcnemar_large_counts_uses_chi_square_with_correction():
    a = np.array([1] * 40 + [0] * 10 + [1] * 30, bool)
    b = np.array([0] * 40 + [1] * 10 + [1] * 30, bool)
    stat = (abs(40 - 10) - 1) ** 2 / 50
    from scipy.stats import chi2

    assert mcnemar_p(a, b) == pytest.approx(chi2.sf(stat, 1), rel=1e-9)
    assert mcnemar_p(a, a) == 1.0


def test_gap_with_several_entries_per_task_averages_per_unit():
    seen = {("t0", 0): 1, ("t0", 1): 1, ("t1", 0): 0, ("t1", 1): 1}
    split = {("t0", 0): [1, 0], ("t0", 1): [0, 0], ("t1", 0): [1, 1], ("t1", 1): [1, 0]}
    g = paired_gap(_episodes("p", "seen", seen), _episodes("p", "paraphrased", split))
    per_unit = np.array([0.5, 0.0, 1.0, 0.5]) - np.array([1, 1, 0, 1])
    assert g["gap"] == pytest.approx(per_unit.mean())
    assert g["n_units"] == 4


def test_compositional_pairs_on_seed_only_and_has_no_mcnemar():
    seen = {(f"t{t}", s): (s + t) % 3 != 0 for t in range(3) for s in range(8)}
    comp = {("held", s): s % 2 == 0 for s in range(8)}
    g = paired_gap(_episodes("p", "seen", seen), _episodes("p", "compositional", comp))
    assert g["pairing"] == "seed" and g["n_units"] == 8
    assert math.isnan(g["mcnemar_p"])
    seen_per_seed = np.array([np.mean([seen[(f"t{t}", s)] for t in range(3)]) for s in range(8)])
    comp_per_seed = np.array([comp[("held", s)] for s in range(8)], float)
    d = comp_per_seed - seen_per_seed
    assert g["gap"] == pytest.approx(d.mean())
    rlo, rhi = _numpy_bootstrap(d)
    assert g["lo"] == pytest.approx(rlo, abs=0.04) and g["hi"] == pytest.approx(rhi, abs=0.04)


def test_language_reliance():
    seen = {(f"t{t}", s): 1 for t in range(4) for s in range(5)}
    blind = pd.concat([_episodes("p", k, seen) for k in ("blank", "shuffled")])
    r = language_reliance(_episodes("p", "seen", seen), blind)
    assert r["reliance"] == 0.0 and r["lo"] == 0.0 and r["hi"] == 0.0  # ignores language
    fails = {k: 0 for k in seen}
    r = language_reliance(_episodes("p", "seen", seen), _episodes("p", "swapped", fails))
    assert r["reliance"] == 1.0  # fails without the right instruction
    half = {k: int(k[1] % 2 == 0) for k in seen}  # 12 of 20 succeed
    r = language_reliance(_episodes("p", "seen", seen), _episodes("p", "blank", half))
    assert r["reliance"] == pytest.approx(1 - 12 / 20)
    assert r["lo"] <= r["reliance"] <= r["hi"] and r["hi"] - r["lo"] > 0.1
    r = language_reliance(_episodes("p", "seen", fails), _episodes("p", "blank", half))
    assert math.isnan(r["reliance"])  # undefined when seen success is 0


def test_compare_tables_and_formats(tmp_path):
    seen, split = _random_pairs(rng=3)
    df = pd.concat([
        _episodes("apt_pi0", "seen", seen), _episodes("apt_pi0", "paraphrased", split),
        _episodes("apt_pi0", "blank", {k: 0 for k in seen}),
        _episodes("apt_pi0", "compositional", {("held", s): 1 for s in range(10)}),
        _episodes("oracle", "seen", {k: 1 for k in seen})], ignore_index=True)
    t = cmp.tables(df)
    succ = t["success"].set_index(["policy", "split"])
    k = int(sum(seen.values()))
    assert succ.loc[("apt_pi0", "seen"), "successes"] == k
    assert succ.loc[("apt_pi0", "seen"), "lo"] == pytest.approx(wilson_closed(k, len(seen))[0])
    assert list(t["success"]["split"][t["success"]["policy"] == "apt_pi0"]) == [
        "seen", "paraphrased", "compositional", "blank"]
    gap = t["gap"].set_index("split")
    assert set(gap.index) == {"paraphrased", "compositional", "blank"}
    assert math.isnan(gap.loc["compositional", "mcnemar_p"])
    assert t["reliance"].iloc[0]["reliance"] == 1.0
    md = cmp.render(t, "md")
    assert "| apt_pi0" in md and "n/a" in md and "McNemar" in md
    csv = cmp.render(t, "csv")
    assert csv.splitlines()[0].startswith("table,")
    back = pd.read_csv(__import__("io").StringIO(csv))
    assert set(back["table"]) == {"success", "gap", "reliance"}
    tex = cmp.render(t, "latex")
    assert "\\begin{tabular}" in tex
    png = cmp.plot_results(t, tmp_path / "p.png")
    assert png.stat().st_size > 1000


def test_compare_versus_a_reference_policy():
    seen, _ = _random_pairs(rng=5)
    better = {k: True for k in seen}
    df = pd.concat([_episodes("baseline_pi0", "seen", seen), _episodes("apt_pi0", "seen", better),
                    _episodes("apt_pi0", "blank", {k: 0 for k in seen})], ignore_index=True)
    v = cmp.tables(df, versus="baseline_pi0")["versus"]
    assert list(v["policy"]) == ["apt_pi0"] and list(v["split"]) == ["seen"]  # blank: no reference episodes
    row = v.iloc[0]
    base_rate = float(np.mean(list(seen.values())))
    assert row["diff"] == pytest.approx(1.0 - base_rate) and row["reference_rate"] == pytest.approx(base_rate)
    assert row["lo"] <= row["diff"] <= row["hi"] and row["n_units"] == len(seen)
    assert "Difference to the reference policy" in cmp.render(cmp.tables(df, versus="baseline_pi0"), "md")
    with pytest.raises(BenchError, match="no such policy"):
        cmp.tables(df, versus="baseline_groot")


def test_success_table_counts_errors_as_failures():
    df = pd.DataFrame({"policy_id": ["p"] * 4, "split": ["seen"] * 4, "success": [True, False, False, True],
                       "error": ["", "RuntimeError: x", "", ""]})
    row = success_table(df).iloc[0]
    assert (row["n"], row["successes"], row["errors"], row["rate"]) == (4, 2, 1, 0.5)


def test_versus_pairs_episode_by_episode_with_several_instructions_per_task():
    """Two policies on a split with 4 instructions per task played the same episodes: the units are
    episodes (not task+seed means) and McNemar is the exact test on their discordant pairs."""
    from scipy.stats import binomtest

    r = np.random.default_rng(7)
    keys = [(f"t{t}", s) for t in range(6) for s in range(5)]
    ref = {k: [bool(x) for x in r.random(4) < 0.5] for k in keys}
    pol = {k: [bool(x) for x in r.random(4) < 0.3] for k in keys}
    df = pd.concat([_episodes("baseline_pi0", "unseen", ref), _episodes("apt_pi0", "unseen", pol)],
                   ignore_index=True)
    row = cmp.tables(df, versus="baseline_pi0")["versus"].iloc[0]
    a = np.array([v for k in keys for v in pol[k]])
    b = np.array([v for k in keys for v in ref[k]])
    assert row["n_units"] == len(a) == 120
    assert row["diff"] == pytest.approx(a.mean() - b.mean())
    n01, n10 = int(np.sum(a & ~b)), int(np.sum(~a & b))
    expected = binomtest(n01, n01 + n10, 0.5).pvalue if n01 + n10 < 25 else None
    if expected is not None:
        assert row["mcnemar_p"] == pytest.approx(expected, rel=1e-9)
    else:
        from scipy.stats import chi2
        assert row["mcnemar_p"] == pytest.approx(chi2.sf((abs(n01 - n10) - 1) ** 2 / (n01 + n10), 1), rel=1e-9)


def _seeded_checkpoints(policy: str, rates: list[float], n: int = 40) -> pd.DataFrame:
    """One checkpoint per training seed, each with an exact success rate over n seen episodes."""
    frames = []
    for i, rate in enumerate(rates):
        k = round(rate * n)
        d = _episodes(policy, "seen", {(f"t{e % 4}", e): e < k for e in range(n)})
        frames.append(d.assign(checkpoint_sha256=f"{policy}-{i}".ljust(16, "x")))
    return pd.concat(frames, ignore_index=True)


def test_across_checkpoints_reports_training_seed_spread_and_welch_difference():
    from scipy.stats import t as student_t

    apt, base = [0.25, 0.35, 0.30], [0.40, 0.45, 0.35]
    df = pd.concat([_seeded_checkpoints("apt_pi0", apt), _seeded_checkpoints("baseline_pi0", base)],
                   ignore_index=True)
    t = cmp.tables(df, versus="baseline_pi0", across=True)
    assert "versus" not in t  # the per-episode table pairs one checkpoint with one checkpoint
    seeds = t["training_seeds"].set_index("policy_id")
    assert seeds.loc["apt_pi0", "mean"] == pytest.approx(np.mean(apt))
    assert seeds.loc["apt_pi0", "sd"] == pytest.approx(np.std(apt, ddof=1))
    assert (seeds.loc["baseline_pi0", "min"], seeds.loc["baseline_pi0", "max"]) == pytest.approx((0.35, 0.45))
    assert seeds.loc["apt_pi0", "checkpoints"] == 3 and seeds.loc["apt_pi0", "episodes_per_checkpoint"] == 40
    # Welch's t interval by hand.
    va, vb = np.var(apt, ddof=1) / 3, np.var(base, ddof=1) / 3
    dof = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 2)
    half = student_t.ppf(0.975, dof) * math.sqrt(va + vb)
    row = t["training_seeds_versus"].iloc[0]
    diff = np.mean(apt) - np.mean(base)
    assert row["diff"] == pytest.approx(diff) and (row["lo"], row["hi"]) == pytest.approx((diff - half, diff + half))
    md = cmp.render(t, "md")
    assert "30.0 ± 5.0" in md and "Welch" in md
    assert "apt_pi0-: 25.0, apt_pi0-: 35.0, apt_pi0-: 30.0" in md  # sha256[:8]: rate
    with pytest.raises(BenchError, match="no such policy id"):
        cmp.tables(df, versus="apt_groot", across=True)
    # A checkpoint with extra episodes (more layouts, another split) is compared on the common ones.
    extra = _episodes("apt_pi0", "seen", {("t0", 100 + e): True for e in range(10)}).assign(
        checkpoint_sha256="apt_pi0-0".ljust(16, "x"))
    blank = _episodes("apt_pi0", "blank", {("t0", 0): False}).assign(checkpoint_sha256="apt_pi0-0".ljust(16, "x"))
    t2 = cmp.tables(pd.concat([df, extra, blank], ignore_index=True), versus="baseline_pi0", across=True)
    pd.testing.assert_frame_equal(t2["training_seeds"], t["training_seeds"])
    one = cmp.tables(_seeded_checkpoints("apt_pi0", [0.5]), across=True)["training_seeds"].iloc[0]
    assert one["checkpoints"] == 1 and math.isnan(one["sd"])


def test_compare_reads_several_stores_and_counts_an_episode_once(tmp_path):
    from apt.eval.store import Store
    from tests.test_eval_store import _record

    recs = [_record(seed=s, success=s % 2 == 0) for s in range(4)]
    with Store(tmp_path / "a.sqlite") as a:
        for r in recs[:3]:
            a.insert(r)
    with Store(tmp_path / "b.sqlite") as b:
        for r in recs[1:]:
            b.insert(r)  # two episodes in both stores
    df = cmp.read_stores([str(tmp_path / "a.sqlite"), str(tmp_path / "b.sqlite")])
    assert len(df) == 4 and df["key"].is_unique
    out = tmp_path / "t.csv"
    assert cmp.compare([str(tmp_path / "a.sqlite"), str(tmp_path / "b.sqlite")], fmt="csv", out=str(out)) == 0
    succ = pd.read_csv(out).query("table == 'success'").iloc[0]
    assert (succ["n"], succ["successes"]) == (4, 2)


def test_seed_clustered_ci_widens_with_within_seed_correlation():
    """Episodes of one seed that all succeed or all fail carry one seed's worth of information: the
    clustered CI is that of the seeds' means (wide), far wider than Wilson's over episodes; with
    independent outcomes the two agree roughly; with too few seeds there is none."""
    r = np.random.default_rng(3)
    seeds = np.repeat(np.arange(10), 24)
    per_seed = r.random(10) < 0.4
    correlated = per_seed[seeds].astype(float)
    lo, hi = cluster_bootstrap_ci(correlated, seeds)
    ref_lo, ref_hi = _numpy_bootstrap(per_seed.astype(float))
    assert (lo, hi) == pytest.approx((ref_lo, ref_hi), abs=0.051)
    w_lo, w_hi = wilson(int(correlated.sum()), len(correlated))
    assert hi - lo > 2.5 * (w_hi - w_lo)
    independent = (r.random(240) < 0.4).astype(float)
    i_lo, i_hi = cluster_bootstrap_ci(independent, seeds)
    w_lo, w_hi = wilson(int(independent.sum()), 240)
    assert 0.6 < (i_hi - i_lo) / (w_hi - w_lo) < 1.4 and i_lo < independent.mean() < i_hi
    few = seeds < MIN_CLUSTERS - 1
    assert all(math.isnan(x) for x in cluster_bootstrap_ci(correlated[few], seeds[few]))
    table = success_table(pd.DataFrame({"policy_id": "p", "split": "seen", "seed": seeds,
                                        "success": correlated.astype(bool), "error": ""})).iloc[0]
    assert table["seeds"] == 10 and (table["lo_seed"], table["hi_seed"]) == pytest.approx((lo, hi))
