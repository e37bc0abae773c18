"""The reference plots: one panel per solver group, one colour per solver in every plot, the converged value as a
line and an interval band where the entries carry one."""

import matplotlib
import matplotlib.pyplot as plt
import pytest
from matplotlib.collections import PolyCollection

from diffsampler.bench.config import solver_entries
from diffsampler.bench.plots import GROUPS, PlotSettings, RowStyle, figure, metric_lines, row_group, solver_colour
from diffsampler.bench.table import Entry, MetricTable, Status
from diffsampler.solvers import SOLVERS

matplotlib.use("Agg")


def test_group_of_a_row_follows_its_schedule_and_artefacts():
    entries = solver_entries(
        [
            "euler",
            {"solver": "ipndm", "schedule": "logsnr"},
            {"solver": "ipndm", "label": "ipndm gits", "schedule": "gits"},
            {"solver": "dpmpp", "label": "dpmpp file", "schedule": "results/schedules/x-nfe{nfe}.json"},
            {"solver": "amed", "options": {"predictor": "p.pt"}},
            {"solver": "dpm-solver-v3", "options": {"stats": "stats"}},
        ]
    )
    assert [row_group(e) for e in entries] == [GROUPS[0], GROUPS[0], GROUPS[1], GROUPS[1], GROUPS[2], GROUPS[2]]


def test_every_built_in_solver_has_its_own_colour_and_keeps_it():
    colours = [solver_colour(name) for name in SOLVERS]
    assert len(set(colours)) == len(colours)
    assert [solver_colour(name) for name in SOLVERS] == colours


def _entry(value, low=None, high=None):
    return Entry(Status.OK, value, low=low, high=high)


@pytest.fixture
def drawn():
    rows = [
        ("euler", [_entry(4.0), _entry(2.0)]),
        ("ipndm", [_entry(3.0, 2.5, 3.5), _entry(1.5, 1.2, 1.8)]),
        ("ipndm gits", [_entry(2.5), _entry(1.2)]),
        ("amed", [Entry(Status.NA, footnote=1), Entry(Status.MISSING)]),
    ]
    table = MetricTable("fd", "a distance", False, rows)
    styles = {
        "euler": RowStyle("euler", GROUPS[0]),
        "ipndm": RowStyle("ipndm", GROUPS[0]),
        "ipndm gits": RowStyle("ipndm", GROUPS[1]),
        "amed": RowStyle("amed", GROUPS[2]),
    }
    fig = figure(table, metric_lines(table, [3, 5]), PlotSettings(styles, {"fd": 1.0}, "converged: x"), "NFE", [3, 5])
    yield fig
    plt.close(fig)


def test_panels_are_the_groups_with_values_in_order(drawn):
    assert [ax.get_title() for ax in drawn.axes] == [GROUPS[0], GROUPS[1]]


def test_a_solver_has_one_colour_in_every_panel_and_the_converged_line_in_each(drawn):
    fixed, learned = drawn.axes
    colour = {line.get_label(): line.get_color() for ax in drawn.axes for line in ax.get_lines()}
    assert colour["ipndm"] == colour["ipndm gits"] == solver_colour("ipndm")
    assert colour["euler"] == solver_colour("euler") != colour["ipndm"]
    for ax in (fixed, learned):
        (line,) = [line for line in ax.get_lines() if line.get_label() == "converged: x"]
        assert list(line.get_ydata()) == [1.0, 1.0]


def test_interval_band_only_where_entries_carry_one(drawn):
    fixed, learned = drawn.axes
    bands = [c for c in fixed.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1
    ys = bands[0].get_paths()[0].vertices[:, 1]
    assert min(ys) == pytest.approx(1.2) and max(ys) == pytest.approx(3.5)
    assert not [c for c in learned.collections if isinstance(c, PolyCollection)]
