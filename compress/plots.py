"""Plots drawn with matplotlib's Agg canvas (no display, no pyplot): retention against size and speed."""

from __future__ import annotations

from pathlib import Path

from compress.errors import BadInput

FORMATS = ("png", "svg", "pdf")


def pareto_plot(path: Path, panels: list[tuple[str, str, list[dict]]], ylabel: str, title: str) -> Path:
    """Write the Pareto chart (see pareto_figure) as PNG, SVG or PDF by the file's suffix."""
    check_format(path)
    return save_figure(pareto_figure(panels, ylabel, title), path)


def pareto_figure(
    panels: list[tuple[str, str, list[dict]]], ylabel: str, title: str, floor: float | None = None
):
    """The Pareto chart, one panel per (axis, x label, points), the front joined by a dashed line,
    as a matplotlib Figure drawn with Agg. pyplot is not used, so a notebook's
    own backend and figures are left alone. `floor`: a retention floor drawn as a dotted line."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.5 * len(panels), 5.2))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)
    for ax, (axis, xlabel, points) in zip(axes[0], panels, strict=True):
        if floor is not None:
            ax.axhline(floor, color="tab:red", lw=0.9, ls=":", zorder=0)
            ax.annotate(
                f"retention floor {floor:g}", (0.01, floor), xycoords=("axes fraction", "data"),
                xytext=(0, 3), textcoords="offset points", fontsize=8, color="tab:red",
            )  # fmt: skip
        _panel(ax, axis, xlabel, points, floor)
        ax.set_ylabel(ylabel)
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def check_format(path: Path) -> str:
    fmt = path.suffix.lstrip(".").lower()
    if fmt not in FORMATS:
        raise BadInput(
            f"{path}: a plot is written as {', '.join(FORMATS)}; give the file one of these suffixes."
        )
    return fmt


def save_figure(fig, path: Path) -> Path:
    """Write a figure as PNG, SVG or PDF by the file's suffix, atomically."""
    from compress.checkpoint import atomic_file

    fmt = check_format(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=130)
    return path


def _panel(ax, axis: str, xlabel: str, points: list[dict], floor: float | None = None) -> None:
    front = sorted((p for p in points if p["front"]), key=lambda p: p["x"])
    if len(front) > 1:
        ax.plot(
            [p["x"] for p in front],
            [p["retention"] for p in front],
            "--",
            color="tab:green",
            lw=1.2,
            label="Pareto front",
            zorder=1,
        )
    for p in points:
        is_base = p["name"] == "baseline"
        ax.scatter(
            p["x"],
            p["retention"],
            s=110 if is_base else 60,
            marker="*" if is_base else "o",
            color="black" if is_base else ("tab:green" if p["front"] else "tab:gray"),
            edgecolors="black",
            linewidths=0.5,
            zorder=3,
        )
    ax.axhline(1.0, color="black", lw=0.6, alpha=0.4)
    if axis == "latency":
        ax.axvline(1.0, color="black", lw=0.6, alpha=0.4)
    xs = [p["x"] for p in points]
    ys = [p["retention"] for p in points] + ([floor] if floor is not None else [])
    pad_x = max(0.05, (max(xs) - min(xs)) * 0.15)
    pad_y = max(0.005, (max(ys) - min(ys)) * 0.15)
    ax.set_xlim(min(xs) - pad_x, max(xs) + pad_x * 2.5)  # room for the labels on the right
    ax.set_ylim(min(ys) - pad_y, max(ys) + pad_y)
    ax.set_xlabel(xlabel)
    _label(ax, points)
    ax.grid(alpha=0.3)
    _legend(ax, line=len(front) > 1)
    if [p["name"] for p in front] == ["baseline"]:
        ax.text(
            0.98,
            0.03,
            "no candidate beats the baseline on both axes",
            transform=ax.transAxes,
            ha="right",
            fontsize=8,
            color="tab:red",
        )


# Label positions to try, in points from the marker: beside it first, then further up or down
# (joined to the marker by a thin line), on the right, then on the left.
_OFFSETS = [(7, 4), (7, -12), (-7, 4), (-7, -12)] + [
    (dx, dy) for k in range(1, 6) for dx in (7, -7) for dy in (4 + 14 * k, -12 - 14 * k)
]


def _legend(ax, line: bool) -> None:
    from matplotlib.lines import Line2D

    def marker(symbol: str, color: str, label: str) -> Line2D:
        return Line2D([], [], marker=symbol, color=color, markeredgecolor="black", ls="", label=label)

    handles = [
        marker("*", "black", "baseline"),
        marker("o", "tab:green", "on the Pareto front"),
        marker("o", "tab:gray", "beaten by another point"),
    ]
    if line:
        handles.append(Line2D([], [], ls="--", color="tab:green", label="Pareto front"))
    ax.legend(handles=handles, loc="best", fontsize=8, framealpha=0.9)


def _label(ax, points: list[dict]) -> None:
    """Name each point where its label covers no other label or marker and stays inside the axes."""
    fig = ax.figure
    fig.canvas.draw()  # fixes the axes' size, so data can be mapped to pixels
    scale = fig.dpi / 72
    frame = ax.get_window_extent()
    placed: list[tuple[float, float, float, float]] = []
    markers = [ax.transData.transform((p["x"], p["retention"])) for p in points]

    def fits(box: tuple[float, float, float, float]) -> bool:
        inside = frame.x0 < box[0] and box[2] < frame.x1 and frame.y0 < box[1] and box[3] < frame.y1
        clear = all(box[2] < b[0] or box[0] > b[2] or box[3] < b[1] or box[1] > b[3] for b in placed)
        bare = not any(box[0] - 4 < mx < box[2] + 4 and box[1] - 4 < my < box[3] + 4 for mx, my in markers)
        return inside and clear and bare

    for p, (px, py) in sorted(zip(points, markers, strict=True), key=lambda item: -item[0]["retention"]):
        width, height = 6.2 * len(p["name"]) * scale, 11 * scale
        for dx, dy in _OFFSETS:
            left = px + dx * scale - (width if dx < 0 else 0)
            box = (left, py + dy * scale, left + width, py + dy * scale + height)
            if fits(box):
                break
        else:  # nowhere clear: beside the marker, and remember that box (not the last one tried)
            dx, dy = _OFFSETS[0]
            left = px + dx * scale
            box = (left, py + dy * scale, left + width, py + dy * scale + height)
        placed.append(box)
        ax.annotate(
            p["name"],
            (p["x"], p["retention"]),
            textcoords="offset points",
            xytext=(dx, dy),
            ha="right" if dx < 0 else "left",
            fontsize=9,
            arrowprops={"arrowstyle": "-", "color": "0.5", "lw": 0.6} if abs(dy) > 14 else None,
        )
