"""Colours that never collide (issue 15.5) and reference lines with a legend (issue 15.10):
badges and series are RGB, so Textual's ANSI theme (red drawn as magenta) cannot merge them,
and each lands on its own colour at 256 and 16 colours."""

from __future__ import annotations

from typing import Any

from app_support import make_app, wait_for
from rich.color import Color, ColorSystem
from rich.style import Style
from textual.color import Color as TextualColor
from textual_plotext import PlotextPlot

from wstui.app.format import BADGES
from wstui.app.widgets.plots import PlotPanel
from wstui.render.plots import PALETTE, REFERENCE

SYSTEMS = (ColorSystem.STANDARD, ColorSystem.EIGHT_BIT, ColorSystem.TRUECOLOR)


def test_series_colours_stay_apart_at_every_colour_depth() -> None:
    for system in SYSTEMS:
        colours = [Color.from_rgb(*c).downgrade(system) for c in (*PALETTE, REFERENCE)]
        assert len({c.get_truecolor() for c in colours}) == len(colours), system


def test_badges_stay_apart_and_critical_is_loudest() -> None:
    styles = {s: Style.parse(style) for s, (_, style) in BADGES.items() if s != "pending"}
    for system in SYSTEMS:
        fg = {s: st.color.downgrade(system).get_truecolor() for s, st in styles.items()}
        assert len(set(fg.values())) == len(fg), system
    crit, warn = styles["critical"], styles["warn"]
    assert crit.bgcolor is not None and warn.bgcolor is None  # a block: never milder
    # 16 colours (TERM=xterm): critical stays red, warn yellow (not magenta / bright red)
    assert crit.bgcolor.downgrade(ColorSystem.STANDARD).number in (1, 9)
    assert warn.color.downgrade(ColorSystem.STANDARD).number in (3, 11)
    # NO_COLOR (Textual's monochrome filter): the critical glyph is the brightest badge
    grey = {s: TextualColor.from_rich_color(st.color).monochrome.r for s, st in styles.items()}
    assert grey["critical"] == max(grey.values())
    assert grey["critical"] - TextualColor.from_rich_color(crit.bgcolor).monochrome.r > 150


async def test_no_color_esd_scatter_and_fit_differ_and_references_have_labels() -> None:
    app, eng = make_app()
    calls: list[tuple[str, dict[str, Any]]] = []
    async with app.run_test(size=(160, 45)) as pilot:
        await wait_for(pilot, lambda: eng.done)
        app.no_color = True
        app.jump_to("model.layers.1.mlp.down_proj.weight")
        await pilot.press("2")
        await wait_for(pilot, lambda: bool(app.query("#plot-esd PlotextPlot")))
        for panel in app.query(PlotPanel):
            plt = panel.query_one(PlotextPlot).plt
            for name in ("plot", "scatter"):
                orig = getattr(plt, name)

                def record(*a: Any, _n: str = name, _o: Any = orig, **kw: Any) -> Any:
                    calls.append((_n, kw))
                    return _o(*a, **kw)

                setattr(plt, name, record)
        app.refresh_view()
        await pilot.pause()
        scatter = [kw["marker"] for n, kw in calls if n == "scatter"]
        lines = [kw["marker"] for n, kw in calls if n == "plot" and kw.get("label")]
        assert scatter and not set(scatter) & set(lines)  # ESD dots, the fit another marker
        labels = [kw.get("label") for _, kw in calls]
        assert "xmin" in labels  # the reference line is in the legend
        calls.clear()
        await pilot.press("4")
        await wait_for(pilot, lambda: any(kw.get("label", "") and "26 dB" in kw["label"]
                                          for _, kw in calls))
