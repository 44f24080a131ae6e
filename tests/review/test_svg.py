"""The server-side plot of a sample's channels."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins"))

from train_platform_ui.svg import PALETTE, series_svg  # noqa: E402

NS = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def points(line: ET.Element) -> np.ndarray:
    return np.array([[float(v) for v in p.split(",")] for p in line.get("points").split()])


def test_one_line_per_channel_with_an_accessible_name_and_legend():
    t = np.linspace(0, 6, 50)
    root = parse(series_svg(np.stack([np.sin(t), 2 * np.cos(t)], axis=1), title="s1: channels over time"))
    assert root.get("role") == "img" and root.get("aria-label") == "s1: channels over time"
    assert root.find(f"{NS}title").text == "s1: channels over time"
    lines = root.findall(f"{NS}polyline")
    assert [line.get("stroke") for line in lines] == list(PALETTE[:2])
    assert all(len(points(line)) == 50 for line in lines)
    texts = [t.text for t in root.findall(f"{NS}text")]
    assert "channel 0" in texts and "channel 1" in texts and "50 steps" in texts
    # one value axis for all channels: the larger channel reaches the top and the bottom
    ys = points(lines[1])[:, 1]
    assert ys.min() < points(lines[0])[:, 1].min() and ys.max() > points(lines[0])[:, 1].max()


def test_missing_readings_break_the_line_and_long_series_keep_their_spikes():
    values = np.zeros((10_000, 1))
    values[4321, 0] = 50.0
    values[100:200, 0] = np.nan
    root = parse(series_svg(values, title="long", max_points=300))
    lines = root.findall(f"{NS}polyline")
    assert len(lines) == 2, "the gap splits the line in two"
    total = sum(len(points(line)) for line in lines)
    assert total <= 2 * 300
    top = min(points(line)[:, 1].min() for line in lines)
    frame = root.find(f"{NS}rect")
    assert top == float(frame.get("y")), "the one spike survives the reduction and reaches the top of the plot"


def test_a_series_stored_outside_the_table_says_so():
    root = parse(series_svg(None, title="remote"))
    assert "stored outside the table" in root.find(f"{NS}text").text
    assert root.findall(f"{NS}polyline") == []
