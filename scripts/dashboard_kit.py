"""The pieces ``build_dashboard.py``'s panels are made of: Grafana's typed SDK set up the one way nasrl's
dashboard uses it (a Prometheus data source picked by a variable, every query kept to the selected runs).
"""

from __future__ import annotations

from grafana_foundation_sdk.builders import bargauge, common, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import dashboard as builder
from grafana_foundation_sdk.models import common as style
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import QueryEditorMode

DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
RUN = 'run=~"$run"'  # every query keeps to the runs picked in the Run selector
LAST_VALUE = common.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)  # a stat's or a bar's
RIGHT_AXIS = [model.DynamicConfigValue(id_val="custom.axisPlacement", value="right")]  # a second quantity's scale

Query = prometheus.Dataquery
Panel = stat.Panel | timeseries.Panel | bargauge.Panel


def query(expr: str, legend: str = "{{run}}") -> Query:
    """A range query (a time series panel's line)."""
    return Query().expr(expr).legend_format(legend).editor_mode(QueryEditorMode.CODE).range()


def instant(expr: str, legend: str = "{{run}}") -> Query:
    """An instant query: the value now, for a stat or a bar gauge."""
    return Query().expr(expr).legend_format(legend).editor_mode(QueryEditorMode.CODE).instant()


def thresholds(*steps: tuple[float, str]) -> builder.ThresholdsConfig:
    """Green up to the first step, then each (value, colour) from that value on."""
    levels = [model.Threshold(value=None, color="green")] + [model.Threshold(value=v, color=c) for v, c in steps]
    return builder.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(levels)


def stat_panel(
    title: str, description: str, expr: str, unit: str = "none", warn: tuple[float, float] | None = None
) -> stat.Panel:
    """A 3-wide number in the top row, one per selected run; green, or orange and red from ``warn``'s two values."""
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .height(4)
        .span(3)
        .unit(unit)
        .color_scheme(builder.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
        .thresholds(thresholds(*zip(warn, ("orange", "red"), strict=True)) if warn else thresholds())
        .color_mode(style.BigValueColorMode.VALUE)
        .graph_mode(style.BigValueGraphMode.NONE)
        .justify_mode(style.BigValueJustifyMode.AUTO)
        .orientation(style.VizOrientation.AUTO)
        .reduce_options(LAST_VALUE)
        .text_mode(style.BigValueTextMode.AUTO)
        .with_target(instant(expr).ref_id("A"))
    )


def timeseries_panel(title: str, description: str, *targets: Query, unit: str = "none") -> timeseries.Panel:
    """A half-width graph of one line per run and query, the legend below it."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .datasource(DATASOURCE)
        .height(8)
        .span(12)
        .unit(unit)
        .draw_style(style.GraphDrawStyle.LINE)
        .line_width(1)
        .fill_opacity(0)
        .show_points(style.VisibilityMode.AUTO)
        .span_nulls(True)
        .point_size(4)
        .axis_placement(style.AxisPlacement.AUTO)
        .stacking(common.StackingConfig().mode(style.StackingMode.NONE).group("A"))
        .color_scheme(builder.FieldColor().mode(model.FieldColorModeId.PALETTE_CLASSIC))
        .legend(
            common.VizLegendOptions()
            .display_mode(style.LegendDisplayMode.LIST)
            .placement(style.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(common.VizTooltipOptions().mode(style.TooltipDisplayMode.MULTI).sort(style.SortOrder.NONE))
    )
    for number, target in enumerate(targets):
        panel.with_target(target.ref_id(chr(ord("A") + number)))
    return panel


def mean_over_30m(histogram: str) -> str:
    """The mean of a histogram's observations in the last 30 minutes, per run."""
    rates = [f"sum by (run) (rate(nasrl_{histogram}_{part}{{{RUN}}}[30m]))" for part in ("sum", "count")]
    return " / ".join(rates)


def quantile_over_30m(q: float, histogram: str, match: str = "") -> str:
    return f"histogram_quantile({q}, sum by (run, le) (rate(nasrl_{histogram}_bucket{{{RUN}{match}}}[30m])))"
