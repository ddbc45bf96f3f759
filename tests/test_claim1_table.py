"""Claim 1 three ways (reports/claim1_table.py) on fabricated rows: the table's cells are the t-intervals over
seeds (DPO - base, DecPO - DPO paired), the reading follows each measure's monosemantic side, and each
proxy-validity sentence's rho equals scipy.stats.spearmanr on the same points."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from decpo.reports.claim1_table import claim1_three_ways, proxy_sentences

SITE = "mlp.up_proj"
MODELS = ["base", "dpo-s0", "dpo-s1", "dpo-s2", "decpo-s0", "decpo-s1", "decpo-s2"]
LAYERS = [3, 5]
RNG = np.random.default_rng(0)
METHOD = {m: ["base", "dpo", "decpo"].index(m.split("-")[0]) for m in MODELS}  # 0, 1, 2
DEC = {(m, L): 0.3 + 0.1 * METHOD[m] + 0.02 * L + RNG.normal(0, 0.01) for m in MODELS for L in LAYERS}
NEED = {(m, L): 40 - 8 * METHOD[m] - L + int(RNG.integers(0, 2)) for m in MODELS for L in LAYERS}
L0 = {(m, L): float(RNG.uniform(20, 40)) for m in MODELS for L in LAYERS}


def _rows() -> list[dict]:
    rows = []
    for (m, L), d in DEC.items():
        rows.append({"model": m, "layer": str(L), "site": SITE, "probe": "decorrelation", "value": str(d)})
        rows.append(
            {
                "model": m,
                "layer": str(L),
                "site": SITE,
                "probe": "sparse_probe/neurons_needed/c",
                "value": str(NEED[(m, L)]),
            }
        )
        rows.append({"model": m, "layer": str(L), "site": SITE, "probe": "sae/l0", "value": str(L0[(m, L)])})
    rows.append({"model": "base", "layer": "9", "site": SITE, "probe": "decorrelation", "value": "0.1"})
    return rows


def _cells(lines: list[str], name: str, layer: int) -> list[str]:
    line = next(x for x in "\n".join(lines).splitlines() if x.startswith(f"| {name} | {layer} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_the_table_cells_are_intervals_over_seeds_and_read_the_monosemantic_side():
    lines = claim1_three_ways(_rows(), SITE)
    assert lines[0].startswith("### Claim 1 three ways")
    assert "| decorrelation (the paper's proxy) | 9 |" not in "\n".join(lines)  # measured layers only
    cells = _cells(lines, "sparse probing: neurons needed (c)", 5)
    dpo = np.array([NEED[(f"dpo-s{s}", 5)] for s in range(3)], float)
    change = dpo - NEED[("base", 5)]
    low, high = stats.t.interval(0.95, 2, loc=change.mean(), scale=stats.sem(change))
    assert cells[2] == "lower" and cells[3] == f"{NEED[('base', 5)]:.1f}"
    assert cells[6] == f"{change.mean():+.1f} [{low:+.1f}, {high:+.1f}]"
    assert cells[7] == "DPO lower: more monosemantic"  # the interval is below 0 and fewer neurons is better
    diff = np.array([NEED[(f"decpo-s{s}", 5)] - NEED[(f"dpo-s{s}", 5)] for s in range(3)], float)
    assert cells[8].startswith(f"{diff.mean():+.1f}")
    dec = _cells(lines, "decorrelation (the paper's proxy)", 3)
    assert dec[7] == "DPO higher: more monosemantic"


def test_a_shares_interval_over_seeds_is_clipped_to_its_range():
    rows = _rows()
    dense = {"base": 0.1, "dpo-s0": 0.0, "dpo-s1": 0.0, "dpo-s2": 0.3}  # t-interval reaches below 0
    rows += [
        {"model": m, "layer": "3", "site": SITE, "probe": "sae/dense_frac", "value": str(v)}
        for m, v in dense.items()
    ]
    cells = _cells(claim1_three_ways(rows, SITE), "SAE: dense latents", 3)
    high = stats.t.interval(0.95, 2, loc=0.1, scale=stats.sem([0.0, 0.0, 0.3]))[1]
    assert cells[4] == f"0.1000 [0.0000, {high:.4f}]"


def test_neurons_needed_is_clipped_to_the_layers_width_in_both_tables():
    """Neurons needed is a k of KS or the width (when no k reaches 95% of the dense probe), so a value outside KS
    is the width, and no interval runs past it (the toxicity run's [1.0, 3191.7] for 32, 1536, 1536)."""
    from decpo.reports.sparse_probing import neurons_bounds, sparse_probing_lines

    need = {"base": 32, "dpo-s0": 32, "dpo-s1": 1536, "dpo-s2": 1536, "decpo-s0": 32, "decpo-s1": 32}
    need["decpo-s2"] = 32
    rows = [
        {"model": m, "layer": "3", "site": SITE, "probe": "sparse_probe/neurons_needed/t", "value": str(v)}
        for m, v in need.items()
    ]
    assert neurons_bounds(rows, SITE) == (1.0, 1536.0) and neurons_bounds(rows, "other") == (
        1.0,
        float("inf"),
    )
    mean = np.mean([32, 1536, 1536])
    low = stats.t.interval(0.95, 2, loc=mean, scale=stats.sem([32, 1536, 1536]))[0]
    assert _cells(claim1_three_ways(rows, SITE), "sparse probing: neurons needed (t)", 3)[4] == (
        f"{mean:.1f} [{max(low, 1.0):.1f}, 1536.0]"
    )
    section = "\n".join(sparse_probing_lines(rows, {"layers": [3]}, [3]))
    line = next(x for x in section.splitlines() if "| t | neurons needed |" in x)
    assert f"{mean:.1f} [{max(low, 1.0):.1f}, 1536.0]" in line
    # only values of KS: the width is unknown, the upper end open
    small = [dict(r, value="32") for r in rows]
    assert neurons_bounds(small, SITE) == (1.0, float("inf"))


def test_each_sentence_gives_spearmans_rho_on_the_same_points():
    sentences = proxy_sentences(_rows(), SITE)
    assert len(sentences) == 2  # neurons needed, L0
    for sentence, measure in zip(sentences, (NEED, L0), strict=True):
        points = sorted(DEC)
        rho = stats.spearmanr([DEC[p] for p in points], [measure[p] for p in points]).statistic
        assert f"Spearman {rho:.2f} [" in sentence and "over 14 (model, layer) points" in sentence
    assert sentences[0].startswith("- decorrelation tracks sparse probing: neurons needed (c): Spearman -")


def test_a_concept_no_model_decodes_reads_floor_and_a_missing_base_is_na():
    """``decodable`` 0 for every model at layer 3: the concept's rows there read floor, not counted; at layer 5
    only base cannot decode it (neurons needed NaN): its cell and DPO - base are n/a, the row stays."""
    rows = []
    for r in _rows():
        if r["probe"] == "sparse_probe/neurons_needed/c" and r["model"] == "base" and r["layer"] == "5":
            r = {**r, "value": "nan"}
        rows.append(r)
        if r["probe"] == "sparse_probe/neurons_needed/c":
            decodes = r["layer"] == "5" and r["model"] != "base"
            rows.append({**r, "probe": "sparse_probe/decodable/c", "value": str(float(decodes))})
    lines = claim1_three_ways(rows, SITE)
    floor = _cells(lines, "sparse probing: neurons needed (c)", 3)
    assert floor[7].startswith("floor: no model's dense probe beats chance")
    no_base = _cells(lines, "sparse probing: neurons needed (c)", 5)
    assert no_base[3] == "n/a" and no_base[6] == "n/a" and no_base[4] != "n/a"
    assert _cells(lines, "decorrelation (the paper's proxy)", 3)[7] == "DPO higher: more monosemantic"


def test_nothing_without_sparse_probing_or_sae_rows():
    rows = [r for r in _rows() if r["probe"] == "decorrelation"]
    assert claim1_three_ways(rows, SITE) == []


@pytest.mark.parametrize("site", ["resid_post"])
def test_another_site_has_no_rows(site):
    assert claim1_three_ways(_rows(), site) == []


def test_points_whose_dense_probe_is_at_chance_are_left_out_of_the_sentences():
    """An accuracy row of a (model, layer) whose concept is not decodable is not a point of the correlation."""
    rows = []
    for r in _rows():
        rows.append(r)
        if r["probe"] == "sparse_probe/neurons_needed/c":
            acc = {**r, "probe": "sparse_probe/acc_k1/c", "value": str(0.5 + 0.01 * float(r["value"]))}
            decodes = r["model"] != "base"
            rows += [acc, {**r, "probe": "sparse_probe/decodable/c", "value": str(float(decodes))}]
    sentence = next(s for s in proxy_sentences(rows, SITE) if "accuracy at k = 1 (c)" in s)
    assert "over 12 (model, layer) points" in sentence  # 14 points less base's 2
    kept = [r for r in rows if not (r["model"] == "base" and r["probe"].startswith("sparse_probe/"))]
    x = [float(r["value"]) for r in kept if r["probe"] == "decorrelation" and r["model"] != "base"]
    y = [float(r["value"]) for r in kept if r["probe"] == "sparse_probe/acc_k1/c"]
    assert f"Spearman {stats.spearmanr(x, y).statistic:.2f} [" in sentence
    nowhere = [{**r, "value": "0.0"} if r["probe"] == "sparse_probe/decodable/c" else r for r in rows]
    lines = proxy_sentences(nowhere, SITE)
    assert lines[-1] == "- Left out: c, which no model's dense probe decodes at any block measured."
    assert not any("(c)" in line for line in lines)
