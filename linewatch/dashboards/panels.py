"""Small wrappers over the Foundation SDK's panel builders that every linewatch dashboard shares.

Each wrapper takes a registry key (:data:`~linewatch.dashboards.queries.QUERIES`), so a panel cannot
carry SQL the tests do not run, and sets what all linewatch panels have in common: the datasource, a
description, legend and tooltip. :func:`assemble` places panels on Grafana's 24-column grid and numbers
them; rows must add up to 24 columns exactly, which keeps the SDK's left-to-right placement from ever
wrapping a panel over another.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from grafana_foundation_sdk.builders import barchart, common, dashboard, heatmap, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as cm
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models import heatmap as hm

from linewatch.dashboards.datasource import SqlAnnotationTargetBuilder, SqlTarget, datasource_ref
from linewatch.dashboards.queries import QUERIES

GRID_WIDTH = 24
#: Dashboard JSON schema version of Grafana 11.x (older servers migrate it on load).
SCHEMA_VERSION = 39
TAG = "linewatch"


def target(key: str) -> SqlTarget:
    """The registered query ``key`` as a panel target."""
    q = QUERIES[key]
    return SqlTarget(q.sql, q.format)


def prop(name: str, value: Any) -> dm.DynamicConfigValue:
    """One field-config property of an override."""
    return dm.DynamicConfigValue(id_val=name, value=value)


def line(color: str, *, dash: bool = False, width: int = 1) -> list[dm.DynamicConfigValue]:
    """Override properties drawing a series as a fixed-colour (dashed) line: limits, thresholds."""
    style = {"fill": "dash", "dash": [10, 10]} if dash else {"fill": "solid"}
    return [prop("color", {"mode": "fixed", "fixedColor": color}), prop("custom.lineStyle", style),
            prop("custom.lineWidth", width)]


def thresholds(*steps: tuple[float | None, str]) -> dashboard.ThresholdsConfig:
    """Absolute colour steps; the first value must be None (the base colour)."""
    return (dashboard.ThresholdsConfig().mode(dm.ThresholdsMode.ABSOLUTE)
            .steps([dm.Threshold(value=v, color=c) for v, c in steps]))


def _legend() -> common.VizLegendOptions:
    return (common.VizLegendOptions().display_mode(cm.LegendDisplayMode.LIST)
            .placement(cm.LegendPlacement.BOTTOM).show_legend(True))


def _tooltip() -> common.VizTooltipOptions:
    return common.VizTooltipOptions().mode(cm.TooltipDisplayMode.MULTI).sort(cm.SortOrder.DESCENDING)


def ts(key: str, title: str, description: str, *, unit: str = "short", bars: bool = False,
       stacked: bool = False, log: bool = False, points: bool = False) -> timeseries.Panel:
    """A time series panel; the query returns ``time`` plus one column per series (or a ``metric``)."""
    p = (timeseries.Panel().title(title).description(description).datasource(datasource_ref())
         .with_target(target(key)).unit(unit).legend(_legend()).tooltip(_tooltip())
         .draw_style(cm.GraphDrawStyle.BARS if bars else cm.GraphDrawStyle.LINE)
         .fill_opacity(60 if bars else 0).line_width(1).point_size(5 if points else 4)
         .show_points(cm.VisibilityMode.ALWAYS if points else cm.VisibilityMode.AUTO).span_nulls(False)
         .stacking(common.StackingConfig().mode(cm.StackingMode.NORMAL if stacked else cm.StackingMode.NONE)
                   .group("A")))
    if log:
        p = p.scale_distribution(common.ScaleDistributionConfig().type(cm.ScaleDistribution.LOG).log(10))
    return p


def tbl(key: str, title: str, description: str) -> table.Panel:
    """A table panel showing the query's rows as they come, filterable."""
    return (table.Panel().title(title).description(description).datasource(datasource_ref())
            .with_target(target(key)).cell_height(cm.TableCellHeight.SM).show_header(True)
            .footer(common.TableFooterOptions().show(False).reducer(["sum"])))


def big(key: str, title: str, description: str, *, unit: str = "short",
        steps: Sequence[tuple[float | None, str]] = ((None, "green"),)) -> stat.Panel:
    """A single number (the query's first value) coloured by ``steps``."""
    return (stat.Panel().title(title).description(description).datasource(datasource_ref())
            .with_target(target(key)).unit(unit).thresholds(thresholds(*steps))
            .color_scheme(dashboard.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
            .reduce_options(common.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
            .color_mode(cm.BigValueColorMode.VALUE).graph_mode(cm.BigValueGraphMode.NONE))


def heat(key: str, title: str, description: str, *, unit: str = "short") -> heatmap.Panel:
    """A heat map of pre-bucketed series: one row per series (e.g. per asset), one cell per time bucket.

    The query returns long time series (``time``, ``metric``, value); the join turns them into one wide
    frame, which the heat map (``calculate: false``) draws row by row."""
    return (heatmap.Panel().title(title).description(description).datasource(datasource_ref())
            .with_target(target(key)).calculate(False).unit(unit)
            .with_transformation(dm.DataTransformerConfig(id_val="joinByField",
                                                          options={"byField": "time", "mode": "outer"}))
            .color(heatmap.HeatmapColorOptions().mode(hm.HeatmapColorMode.SCHEME).scheme("Oranges")
                   .fill("dark-orange").scale(hm.HeatmapColorScale.EXPONENTIAL).exponent(0.5).steps(64)
                   .reverse(False))
            .rows_frame(heatmap.RowsHeatmapOptions().layout(cm.HeatmapCellLayout.AUTO))
            .y_axis(heatmap.YAxisConfig().axis_placement(cm.AxisPlacement.LEFT))
            .show_value(cm.VisibilityMode.NEVER).cell_gap(1).show_legend().mode(cm.TooltipDisplayMode.SINGLE))


def bars(key: str, title: str, description: str, *, x: str) -> barchart.Panel:
    """A stacked bar chart of a table query: one bar per ``x`` value, one segment per numeric column."""
    return (barchart.Panel().title(title).description(description).datasource(datasource_ref())
            .with_target(target(key)).x_field(x).stacking(cm.StackingMode.NORMAL).legend(_legend())
            .tooltip(_tooltip()).show_value(cm.VisibilityMode.AUTO).fill_opacity(80))


def query_variable(name: str, label: str, key: str) -> dashboard.QueryVariable:
    """A single-valued variable filled by the registered query, refreshed when the time range changes."""
    sql = QUERIES[key].sql
    return (dashboard.QueryVariable(name).label(label).datasource(datasource_ref()).query(sql)
            .refresh(dm.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(dm.VariableSort.ALPHABETICAL_ASC)
            .multi(False).include_all(False))


def custom_variable(name: str, label: str, values: Sequence[str]) -> dashboard.CustomVariable:
    """A single-valued variable choosing among fixed values (the first is the default)."""
    return (dashboard.CustomVariable(name).label(label).values(",".join(values))
            .current(dm.VariableOption(text=values[0], value=values[0], selected=True)).multi(False)
            .include_all(False))


def sql_annotation(name: str, key: str, color: str) -> dashboard.AnnotationQuery:
    """Annotations from a registered query returning ``time``, ``timeend``, ``text`` and ``tags``."""
    return (dashboard.AnnotationQuery().name(name).datasource(datasource_ref()).enable(True).hide(False)
            .icon_color(color).target(SqlAnnotationTargetBuilder(QUERIES[key].sql)))


def new_dashboard(uid: str, title: str, description: str, *, time_from: str = "now-6h") -> dashboard.Dashboard:
    """A read-only, provisioned linewatch dashboard linking to its siblings by tag (Grafana adds its
    built-in "Annotations & Alerts" query itself)."""
    return (dashboard.Dashboard(title).uid(uid).description(description).tags([TAG]).timezone("browser")
            .readonly().tooltip(dm.DashboardCursorSync.CROSSHAIR).refresh("30s").time(time_from, "now")
            .version(1).link(dashboard.DashboardLink("linewatch").type(dm.DashboardLinkType.DASHBOARDS)
                             .tags([TAG]).as_dropdown(False).include_vars(False).keep_time(True)
                             .icon("external link").target_blank(False))
            )


def assemble(dash: dashboard.Dashboard, rows: Sequence[Sequence[tuple[Any, int, int]]]) -> dict[str, Any]:
    """Place ``(panel, width, height)`` rows on the grid, number the panels and return the dashboard JSON."""
    n = 0
    for row in rows:
        widths = [w for _, w, _ in row]
        if sum(widths) != GRID_WIDTH or min(widths) < 1:
            raise ValueError(f"a row of panels must fill {GRID_WIDTH} columns exactly, got {widths}")
        for panel, w, h in row:
            n += 1
            dash = dash.with_panel(panel.id(n).span(w).height(h))
    doc = json.loads(json.dumps(dash.build(), cls=JSONEncoder))
    doc["schemaVersion"] = SCHEMA_VERSION
    return doc


def cpk_colours() -> list[dm.DynamicConfigValue]:
    """Colour capability cells: red below 1.0, orange below 1.33 (the usual customer minimum), green above."""
    steps = thresholds((None, "red"), (1.0, "orange"), (1.33, "green")).build()
    return [prop("thresholds", steps), prop("custom.cellOptions", {"type": "color-background"})]


def threshold_lines(panel: timeseries.Panel, *values: float, color: str = "red") -> timeseries.Panel:
    """Draw horizontal dashed lines at ``values`` (e.g. control limits, PSI alarm levels)."""
    steps: list[tuple[float | None, str]] = [(None, "transparent"), *((v, color) for v in values)]
    return (panel.thresholds(thresholds(*steps))
            .thresholds_style(common.GraphThresholdsStyleConfig().mode(cm.GraphThresholdsStyleMode.DASHED)))
