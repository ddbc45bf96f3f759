"""Checks the probe figures' decisions on their axes, not their pixels: block numbers on x, the regularized
layer marked, a t-band over seeds, a log axis where a measure spans decades (chosen from the data)."""

from __future__ import annotations

import math

import pytest
from matplotlib.collections import PolyCollection

from decpo.probes.plots import (
    REGULARIZED_GID,
    REGULARIZED_LABEL,
    axis_scale,
    curves_by_method,
    difference_band,
    plot_probes,
    probe_figure,
    seed_band,
)
from decpo.reports.probes import curves, decorrelation_figure, plot_decorrelation

BLOCKS = range(6)
# mono_scale of the issue: one spike near 9e5 among values near 1
MONO = {0: 1.2, 1: 3.0, 2: 9.1e5, 3: 2.5, 4: 1.8, 5: 1.1}


def rows(probe: str, values: dict[str, dict[int, float]], site: str = "mlp.up_proj") -> list[dict]:
    return [
        {"model": model, "probe": probe, "site": site, "layer": layer, "value": v, "depth": layer / 5}
        for model, per_layer in values.items()
        for layer, v in per_layer.items()
    ]


def seeded(offset: float, scale: float = 1.0) -> dict[int, float]:
    return {layer: scale * (0.5 + 0.05 * layer) + offset for layer in BLOCKS}


def regularized_lines(ax) -> list:
    return [line for line in ax.get_lines() if line.get_gid() == REGULARIZED_GID]


@pytest.mark.parametrize(
    ("values", "scale"),
    [
        (list(MONO.values()), "log"),
        ([0.41, 0.45, 0.52], "linear"),
        ([1.0, 99.0], "linear"),  # under two decades
        ([-3.0, 0.0, 2e4], "symlog"),  # both signs, spanning decades
        ([0.0, 0.0], "linear"),
        ([math.nan, 1.0, 1e3], "log"),  # non-finite values are not plotted: not counted
    ],
)
def test_axis_scale_is_chosen_from_the_data(values, scale):
    assert axis_scale(values) == scale


def test_mono_scale_spike_gets_a_log_axis_with_block_numbers_and_the_regularized_layer():
    c = curves_by_method(rows("mono_scale", {"base": MONO, "dpo": {k: 2 * v for k, v in MONO.items()}}))
    fig = probe_figure(c, "mono_scale", "mlp.up_proj", regularized=[3])
    ax, dx = fig.axes
    assert ax.get_yscale() == "log"
    for a in (ax, dx):
        assert "block" in a.get_xlabel()
        ticks = [t for t in a.get_xticks() if min(BLOCKS) <= t <= max(BLOCKS)]
        assert ticks and all(float(t).is_integer() for t in ticks)
        (line,) = regularized_lines(a)
        assert list(line.get_xdata()) == [3, 3]
        assert REGULARIZED_LABEL in [t.get_text() for t in a.get_legend().get_texts()]
    # the curves are per block number, not per relative depth
    base = next(line for line in ax.get_lines() if line.get_label() == "base")
    assert list(base.get_xdata()) == list(BLOCKS)


def test_a_measure_in_a_narrow_range_stays_linear():
    c = curves_by_method(rows("decorrelation", {"base": seeded(0.0), "dpo": seeded(0.01)}))
    fig = probe_figure(c, "decorrelation", "mlp.up_proj")
    assert [a.get_yscale() for a in fig.axes] == ["linear", "linear"]
    assert not regularized_lines(fig.axes[0])


def test_seeds_are_one_curve_with_a_t_band_and_the_difference_is_paired_by_seed():
    values = {
        "base": seeded(0.0),
        "dpo-s0": seeded(0.010),
        "dpo-s1": seeded(0.014),
        "decpo-s0": seeded(0.030),
        "decpo-s1": seeded(0.040),
    }
    c = curves_by_method(rows("decorrelation", values))
    assert sorted(c) == ["base", "decpo", "dpo"] and sorted(c["dpo"]) == [0, 1]
    fig = probe_figure(c, "decorrelation", "mlp.up_proj", regularized=[1, 4])
    ax, dx = fig.axes
    assert {line.get_label() for line in ax.get_lines()} >= {"base", "dpo", "decpo"}
    assert len([p for p in ax.collections if isinstance(p, PolyCollection)]) == 2  # dpo and decpo: 2 seeds
    assert len([p for p in dx.collections if isinstance(p, PolyCollection)]) == 1
    assert "2 seeds" in ax.get_title()
    assert sorted(line.get_xdata()[0] for line in regularized_lines(ax)) == [1, 4]
    diff = difference_band(c["decpo"], c["dpo"])
    mean, low, high = diff[2]
    assert mean == pytest.approx(0.023) and low < mean < high
    assert seed_band([0.02, 0.026]) == pytest.approx(diff[2])


def test_plot_probes_writes_one_png_per_probe_and_site(tmp_path):
    data = rows("mono_scale", {"base": MONO}) + rows("hoyer", {"base": seeded(0.0)}, site="resid_post")
    paths = plot_probes(data, tmp_path, regularized=[2])
    assert sorted(p.name for p in paths) == ["hoyer__resid_post.png", "mono_scale__mlp_up_proj.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_report_decorrelation_figure_marks_blocks_and_takes_a_log_axis_when_needed(tmp_path):
    values = {
        "base": MONO,
        "dpo-s0": MONO,
        "dpo-s1": {k: (1.1 if k % 2 else 0.9) * v for k, v in MONO.items()},
    }
    c = curves(rows("decorrelation", values), "decorrelation", "mlp.up_proj")
    path = plot_decorrelation(c, tmp_path / "fig.png", regularized=[3], title="t")
    assert path is not None and path.stat().st_size > 1000
    fig = decorrelation_figure(c, regularized=[3], title="t", ylabel="decorrelation")
    ax, dx = fig.axes
    assert ax.get_yscale() == "log" and dx.get_yscale() == "symlog"  # differences of both signs, over decades
    for a in (ax, dx):
        assert "block" in a.get_xlabel()
        assert [line.get_xdata()[0] for line in regularized_lines(a)] == [3]


def test_the_marked_blocks_resolve_on_the_model_and_a_bad_spec_fails_before_it_loads(tmp_path):
    from decpo.models import TINY_NAME, load_model
    from decpo.probes.options import ProbeOptionError
    from decpo.probes.runner import _marked_blocks, probe_models

    model = load_model(TINY_NAME)  # 2 blocks
    assert _marked_blocks("-1", model) == [1]
    assert _marked_blocks((0, -1), model) == [0, 1]
    assert _marked_blocks("7", model) == []  # out of range: a warning, no mark, the probes still run
    with pytest.raises(ProbeOptionError, match="--regularized-layers"):
        probe_models({"base": "no-such-model"}, ["a text", "another"], tmp_path, regularized_layers="abc")
