"""Bird's-eye pictures: a PNG is written, plans are drawn forward-up in the ego frame with their colours."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from PIL import Image

from data_scene_builders import make_scene
from sim.bev import draw_scene, save_scene_picture, scene_text
from sim.cameras import render_cameras


def test_save_scene_picture_writes_a_png_with_cameras_plans_and_text(tmp_path):
    scene = make_scene(light_state="red", cone=True, sample_type="neg")
    scene.cameras = render_cameras(scene, {"height": 32, "width": 64})
    plans = [scene.future * np.array([f, 1.0, 1.0]) for f in (0.6, 1.0, 1.2)]
    path = save_scene_picture(tmp_path / "pics" / "scene.png", scene, plans=plans, plan_values=[0.1, 0.9, 0.5],
                              text="PDMS 0.91\nreasoning: keep lane", camera_frames=(0, -1), dpi=60)
    with Image.open(path) as image:
        assert image.format == "PNG"
        assert image.width > 300 and image.height > 300
        pixels = np.asarray(image.convert("RGB"))
    # The red lamp of the front camera strip and the red negative trajectory both leave pure-red pixels.
    assert ((pixels[..., 0] > 200) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)).any()


def test_plans_are_drawn_forward_up_with_their_colours():
    scene = make_scene(car_ahead_m=None)
    plan = np.array([[10.0 * t, 2.0 * t, 0.0] for t in range(1, 9)])  # forward and drifting left
    fig = Figure()
    ax = fig.add_subplot()
    draw_scene(ax, scene, plans=[plan], plan_colors=["#ff00ff"], plan_labels=["my plan"], show_scene_trajectories=False)
    (line,) = [l for l in ax.get_lines() if l.get_label() == "my plan"]
    u, v = line.get_data()
    np.testing.assert_allclose(v, np.concatenate([[0.0], plan[:, 0]]))  # forward is up
    np.testing.assert_allclose(u, np.concatenate([[0.0], -plan[:, 1]]))  # left is left
    assert to_rgba(line.get_color()) == to_rgba("#ff00ff")
    assert ax.get_ylim() == (-15.0, 60.0)
    with pytest.raises(ValueError, match="2 plans but 1 plan colours"):
        draw_scene(fig.add_subplot(), scene, plans=[plan, plan], plan_colors=["red"])


def test_values_colour_plans_through_the_colour_map():
    scene = make_scene(car_ahead_m=None)
    plans = [scene.future, scene.future * 0.5]
    fig = Figure()
    ax = fig.add_subplot()
    mappable = draw_scene(ax, scene, plans=plans, plan_values=[0.0, 1.0], plan_labels=["low", "high"], cmap="viridis")
    colours = {l.get_label(): to_rgba(l.get_color()) for l in ax.get_lines() if l.get_label() in ("low", "high")}
    assert colours["low"] == pytest.approx(mappable.to_rgba(0.0))
    assert colours["high"] == pytest.approx(mappable.to_rgba(1.0))


def test_scene_text_names_the_sample_and_the_reasoning():
    text = scene_text(make_scene(sample_type="neg"))
    assert "sample: neg (too_fast)" in text and "keep lane" in text and "command: straight" in text


def test_pictures_command_writes_one_picture_per_family(tmp_path):
    from sim.pictures import main
    from sim.scenarios import FAMILIES

    assert main(["--out", str(tmp_path), "--families", ",".join(FAMILIES[:2]), "--height", "32", "--width", "64"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f"{FAMILIES[0]}_pos.png", f"{FAMILIES[1]}_neg.png"])
    assert main(["--out", str(tmp_path), "--families", "no_such_family"]) == 2
