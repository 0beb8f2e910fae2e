"""Animation and video: the camera warp, frame sequences for both generators, resume, video in and out."""

from __future__ import annotations

from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

import artgen
import artgen.animation as animation
from artgen.animation import warp
from artgen.errors import RunInterrupted, UserError
from artgen.output import read_metadata
from artgen.video import frame_files, read_frames, video_fps, write_mp4


def dot(row: int, col: int, size: int = 32) -> torch.Tensor:
    image = torch.zeros(1, 3, size, size)
    image[..., row, col] = 1.0
    return image


def test_identity_move_changes_nothing():
    image = torch.rand(2, 3, 24, 40)
    assert torch.equal(warp(image), image)
    # a full turn goes through the sampling path and must land on the same pixels
    torch.testing.assert_close(warp(image, angle=360.0), image, atol=1e-5, rtol=0)


def test_translation_moves_a_known_pixel():
    moved = warp(dot(10, 10), translate_x=3, translate_y=-2, border="wrap")
    assert moved[0, 0, 8, 13] == pytest.approx(1.0, abs=1e-5)
    assert moved.sum().item() == pytest.approx(3.0, abs=1e-4)


def test_rotation_is_counter_clockwise_about_the_centre():
    moved = warp(dot(15, 25), angle=90.0)   # right of the centre goes to above it
    assert moved[0, 0, 6, 15] == pytest.approx(1.0, abs=1e-4)


def test_zoom_scales_about_the_centre():
    ramp = torch.arange(32.0).view(1, 1, 1, 32).expand(1, 3, 32, 32).contiguous()
    zoomed = warp(ramp, zoom=2.0)
    columns = torch.arange(8, 24, dtype=torch.float32)
    expected = 16 + (columns + 0.5 - 16) / 2 - 0.5   # each column samples half as far from the centre
    torch.testing.assert_close(zoomed[0, 0, 10, 8:24], expected, atol=1e-4, rtol=0)


def test_wrap_repeats_and_reflect_mirrors_beyond_the_edge():
    image = torch.rand(1, 3, 16, 32)
    torch.testing.assert_close(warp(image, translate_x=8, border="wrap"), torch.roll(image, 8, dims=-1),
                               atol=1e-5, rtol=0)
    reflected = warp(image, translate_x=4, border="reflect")
    torch.testing.assert_close(reflected[..., :4], image[..., :4].flip(-1), atol=1e-5, rtol=0)


def anim_settings(tiny_models, tmp_path, generator="vqgan", **overrides):
    values = dict(frames=5, steps=2, steps_per_frame="0:(2)", zoom="0:(1.0), 4:(1.1)", angle="2",
                  translation_x="0:(1), 3:(-1)", init_strength="0.5", frames_dir=str(tmp_path / "frames"))
    return tiny_models.settings(generator, **(values | overrides))


@pytest.mark.parametrize("generator, extra", [("vqgan", {}), ("diffusion", {}), ("diffusion", {"preselect": 3})])
def test_five_frame_animation_writes_frames_and_video(tmp_path, tiny_models, generator, extra):
    result = artgen.animate(progress=False, gif=True, **anim_settings(tiny_models, tmp_path, generator, **extra))
    assert [path.name for path in result.frames] == [f"frame_{i:05d}.png" for i in range(1, 6)]
    assert [read_metadata(path)["frame"] for path in result.frames] == list(range(5))
    frames = iio.imread(result.video, plugin="FFMPEG", index=None)
    assert frames.shape == (5, 32, 32, 3)
    assert video_fps(result.video) == pytest.approx(12.0)
    assert result.gif.exists() and iio.imread(result.gif, index=None).shape[0] == 5
    stills = [iio.imread(path) for path in result.frames]
    assert not np.array_equal(stills[0], stills[-1])


def test_resumed_animation_equals_the_uninterrupted_one(tmp_path, tiny_models, ctrl_c_at_drive):
    whole = artgen.animate(progress=False, **anim_settings(tiny_models, tmp_path / "a"))
    ctrl_c_at_drive(3)
    settings = anim_settings(tiny_models, tmp_path / "b")
    with pytest.raises(RunInterrupted, match="frame 3 of 5.*2 complete frames.*--resume"):
        artgen.animate(progress=False, **settings)
    folder = tmp_path / "b" / "frames"
    assert sorted(p.name for p in folder.iterdir()) == ["frame_00001.png", "frame_00002.png"]
    ctrl_c_at_drive(None)

    with pytest.raises(UserError, match="already holds 2 frames.*--resume.*--overwrite"):
        artgen.animate(progress=False, **settings)
    with pytest.raises(UserError, match="holds frames of another run \\(steps"):
        artgen.animate(progress=False, **(settings | {"steps": 3, "resume": True}))
    resumed = artgen.animate(progress=False, resume=True, **settings)
    for first, second in zip(whole.frames, resumed.frames, strict=True):
        assert np.array_equal(iio.imread(first), iio.imread(second)), second.name


def test_keyed_prompts_change_the_prompt_weights(tmp_path, tiny_models, monkeypatch):
    seen = []
    real = animation.Objective.with_prompt_weights

    def spy(self, weights):
        seen.append(weights)
        return real(self, weights)

    monkeypatch.setattr(animation.Objective, "with_prompt_weights", spy)
    settings = anim_settings(tiny_models, tmp_path, prompts=["sky:0.5"], prompt_keyframes="0:a forest|2:a city",
                             prompt_transition=1, frames=4, zoom="1")
    artgen.animate(progress=False, **settings)
    assert seen == [[0.5, 1.0, 0.0], [0.5, 1.0, 0.0], [0.5, 0.5, 0.5], [0.5, 0.0, 1.0]]


def make_video(path: Path, frames: int = 6, size: tuple[int, int] = (48, 32), fps: float = 8.0) -> Path:
    width, height = size
    ramp = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    pictures = [np.broadcast_to((ramp + 30 * i) % 256, (height, width, 3)).astype(np.uint8) for i in range(frames)]
    folder = path.parent / f"{path.stem}-src"
    folder.mkdir()
    for index, picture in enumerate(pictures):
        iio.imwrite(folder / f"frame_{index + 1:05d}.png", picture)
    return write_mp4(frame_files(folder), path, fps, crf=10)


def test_video_round_trip(tmp_path):
    video = make_video(tmp_path / "clip.mp4", frames=6)
    read = list(read_frames(video))
    assert len(read) == 6 and read[0].size == (48, 32)
    assert video_fps(video) == pytest.approx(8.0)
    assert [frame.size for frame in read_frames(video, every_nth=2)] == [(48, 32)] * 3
    assert len(list(read_frames(video, limit=4))) == 4
    assert not list(tmp_path.glob(".*part*"))


def test_stylize_video_from_the_command_line(artgen, tiny_models, tmp_path):
    video = make_video(tmp_path / "in.mp4", frames=4, fps=8.0)
    result = artgen("stylize-video", video, "a painting", *tiny_models.vqgan_flags, "--steps", "2",
                    "--every-nth", "2", "--blend", "0.5", "--frames-dir", "styled", "--quiet")
    assert result.code == 0, result.err
    assert result.out.strip() == "styled.mp4"
    assert [p.name for p in frame_files(Path("styled"))] == ["frame_00001.png", "frame_00002.png"]
    assert video_fps("styled.mp4") == pytest.approx(4.0)
    assert read_metadata("styled/frame_00002.png")["settings"]["video_input"] == str(video)


def test_encode_assembles_a_frames_folder(artgen, tmp_path):
    make_video(tmp_path / "x.mp4", frames=3)   # leaves its frames in x-src/
    result = artgen("encode", "x-src", "--fps", "5", "--gif")
    assert result.code == 0, result.err
    assert result.out.split() == ["x-src.mp4", "x-src.gif"]
    assert iio.imread("x-src.mp4", plugin="FFMPEG", index=None).shape[0] == 3
    again = artgen("encode", "x-src")
    assert again.code == 1 and "already exists" in again.err
