"""The measuring side of lab/zoo_report.py: --set parsing, the interval, and how --measure and the lab page's table
pool seed sets."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from artgen.output import read_metadata, save_png
from lab import zoo_report
from lab.zoo_report import ALL_PROMPTS, check_seed_sets, interval, measure, parse_setting, report


def test_parse_setting_reads_values_as_yaml() -> None:
    assert parse_setting("tv-scale=2000") == ("tv_scale", 2000)
    assert parse_setting("clamp_by_signal=false") == ("clamp_by_signal", False)
    assert parse_setting("clip_checkpoint=[/tmp/a.safetensors]") == ("clip_checkpoint", ["/tmp/a.safetensors"])


def test_parse_setting_without_equals_says_how() -> None:
    with pytest.raises(SystemExit, match="key=value"):
        parse_setting("tv_scale")


def test_parse_setting_with_a_value_that_is_not_yaml_says_to_quote_it() -> None:
    with pytest.raises(SystemExit, match="quote it"):
        parse_setting("cut_overview=[16]*1000")
    assert parse_setting('cut_overview="[16]*1000"') == ("cut_overview", "[16]*1000")


def test_interval_is_wide_at_24_prompts_and_narrows_with_more() -> None:
    low, high = interval(12, 24)
    assert low == pytest.approx(0.314, abs=1e-3) and high == pytest.approx(0.686, abs=1e-3)
    assert interval(0, 24)[0] == pytest.approx(0.0, abs=1e-12) and interval(0, 24)[1] > 0.1
    low96, high96 = interval(48, 96)
    assert high96 - low96 < (high - low) * 0.6


def test_measure_pools_every_seed_set_with_the_settings(monkeypatch, tmp_path: Path, capsys) -> None:
    """Seed set 0 draws every prompt as asked; set 100 every shape but only every other colour."""
    drawn = []

    def fake_draw(jobs):
        drawn.extend((run, seed, settings) for run, _, _, seed, _, _, settings in jobs)
        return [(torch.zeros(3, 8, 8), (colour if seed < 100 or seed % 2 == 0 else "grey", shape))
                for _, colour, shape, seed, _, _, _ in jobs]

    monkeypatch.setattr(zoo_report, "draw_side_by_side", fake_draw)
    measure("diffusion", {"tv_scale": 2000}, [0, 100], tmp_path, grid=tmp_path / "grid.png")
    count = len(ALL_PROMPTS)
    assert drawn == [("diffusion", seed, {"tv_scale": 2000}) for seed in [*range(count), *range(100, 100 + count)]]
    out = capsys.readouterr().out.strip().splitlines()
    assert "seeds 100-123: colour 50%, shape 100%" in out[1]
    assert out[-1].startswith(f"pooled, {2 * count} images: colour 75% (") and "shape 100% (" in out[-1]
    assert (tmp_path / "grid.png").exists()


def test_report_pools_the_seed_sets_and_draws_the_control_on_the_first(monkeypatch, tmp_path: Path) -> None:
    """Seed set 0 draws every asked shape, set 100 every other one; the control draws nothing asked."""
    drawn_seeds = []

    def fake_draw(jobs):
        drawn_seeds.extend((seed, clip is None) for _, _, _, seed, _, clip, _ in jobs)
        readings = [("grey", None) if clip else (colour, shape if seed < 100 or seed % 2 == 0 else "blob")
                    for _, colour, shape, seed, _, clip, _ in jobs]
        return [(torch.zeros(3, 8, 8), reading) for reading in readings]

    monkeypatch.setattr(zoo_report, "draw_side_by_side", fake_draw)
    monkeypatch.setattr(zoo_report, "random_clip_checkpoint", lambda folder: folder / "control.safetensors")
    monkeypatch.setattr(zoo_report, "ROOT", tmp_path)
    table = report(tmp_path, [0, 100])
    count = len(ALL_PROMPTS)
    assert "| diffusion | shapes-clip | 0, 100 | 100% (100, 100) | 75% (100, 50) |" in table
    assert "| diffusion | random weights | 0 | 0% | 0% |" in table
    trained_seeds = [*range(count), *range(100, 100 + count)]
    expected = [[(seed, True) for seed in trained_seeds] + [(seed, False) for seed in zoo_report.control_prompts(run)]
                for run in zoo_report.RUNS]
    assert drawn_seeds == [job for jobs in expected for job in jobs]  # once for each run
    assert "| strokes | random weights | 0 (6 prompts, every colour) |" in table
    assert (tmp_path / "examples" / "offline-diffusion-grid.png").exists()


def test_a_slow_runs_control_draws_every_colour_once() -> None:
    chosen = [ALL_PROMPTS[index] for index in zoo_report.control_prompts("strokes")]
    assert sorted(colour for colour, _ in chosen) == sorted(colour for colour, _ in ALL_PROMPTS[:6])
    assert zoo_report.control_prompts("pixels") == list(range(len(ALL_PROMPTS)))


def test_overlapping_seed_sets_are_refused() -> None:
    check_seed_sets([0, 100, 24])
    with pytest.raises(SystemExit, match="overlap"):
        check_seed_sets([0, 10])


def test_report_redraws_only_the_runs_asked_and_keeps_the_other_rows(monkeypatch, tmp_path: Path) -> None:
    drawn_runs = set()

    def fake_draw(jobs):
        drawn_runs.update(job[0] for job in jobs)
        return [(torch.zeros(3, 8, 8), (colour, shape)) for _, colour, shape, _, _, _, _ in jobs]

    monkeypatch.setattr(zoo_report, "draw_side_by_side", fake_draw)
    monkeypatch.setattr(zoo_report, "random_clip_checkpoint", lambda folder: folder / "control.safetensors")
    monkeypatch.setattr(zoo_report, "ROOT", tmp_path)
    earlier = report(tmp_path, [0, 100])
    earlier = earlier.replace("| diffusion | shapes-clip | 0, 100 | 100% (100, 100) |",
                              "| diffusion | shapes-clip | 0, 100 | 42% (40, 44) |")
    drawn_runs.clear()
    table = report(tmp_path, [200], runs=["vqgan"], earlier=earlier)
    assert drawn_runs == {"vqgan"}
    assert "| diffusion | shapes-clip | 0, 100 | 42% (40, 44) |" in table  # kept with its seed sets, not redrawn
    assert "| vqgan | shapes-clip | 200 | 100% |" in table and "| vqgan | random weights | 200 | 100% |" in table
    assert len(table.splitlines()) == len(earlier.splitlines())
    without_diffusion = "\n".join(line for line in earlier.splitlines() if not line.startswith("| diffusion |"))
    with pytest.raises(SystemExit, match="no rows for diffusion; add diffusion to --runs"):
        report(tmp_path, [0], runs=["vqgan"], earlier=without_diffusion)


def test_overview_shows_every_colour_of_the_first_seed_set_once_per_run(monkeypatch, tmp_path: Path) -> None:
    jobs_seen = []

    def fake_draw(jobs):
        jobs_seen.extend(jobs)
        return [(torch.zeros(3, 8, 8), (colour, shape)) for _, colour, shape, _, _, _, _ in jobs]

    monkeypatch.setattr(zoo_report, "draw_side_by_side", fake_draw)
    zoo_report.overview(["pixels", "vqgan"], tmp_path, tmp_path / "overview.png", seed=100)
    assert [job[0] for job in jobs_seen] == ["pixels"] * 6 + ["vqgan"] * 6
    assert [job[1] for job in jobs_seen[:6]] == list(zoo_report.SHAPE_COLOURS)
    for run, colour, shape, seed, output, clip, _ in jobs_seen:  # the table's images of seed set 100, trained CLIP
        assert seed == 100 + ALL_PROMPTS.index((colour, shape)) and clip is None
        assert output == zoo_report.output_path(tmp_path, run, seed, None)
    with Image.open(tmp_path / "overview.png") as sheet:
        assert sheet.width == 6 * 96


def test_an_image_drawn_with_the_same_settings_is_read_back_and_any_change_redraws(monkeypatch, tmp_path: Path):
    quick = {"steps": 2, "cutn": 4, "prior_scale": 0}
    output = tmp_path / "vqgan-7-trained.png"
    image, reading = zoo_report.draw_and_read("vqgan", "red", "circle", 7, output, settings=quick)
    redrawn = []

    def fake_generate(settings, progress):
        redrawn.append(settings)
        raise RuntimeError("redrawn")

    monkeypatch.setattr(zoo_report.artgen, "generate", fake_generate)
    again, reading_again = zoo_report.draw_and_read("vqgan", "red", "circle", 7, output, settings=quick)
    assert not redrawn and reading_again == reading
    assert torch.allclose(again, image, atol=1 / 255)  # the PNG's 8 bits
    moved = tmp_path / "moved" / output.name
    moved.parent.mkdir()
    output.rename(moved)
    zoo_report.draw_and_read("vqgan", "red", "circle", 7, moved, settings=quick)
    assert not redrawn  # a folder of images can be moved
    with pytest.raises(RuntimeError, match="redrawn"):  # another setting
        zoo_report.draw_and_read("vqgan", "red", "circle", 7, moved, settings={**quick, "steps": 3})
    with pytest.raises(RuntimeError, match="redrawn"):  # another seed
        zoo_report.draw_and_read("vqgan", "red", "circle", 8, moved, settings=quick)
    assert [(settings.steps, settings.seed) for settings in redrawn] == [(3, 7), (2, 8)]


def test_an_image_of_a_preset_without_a_guidance_scale_is_read_back(monkeypatch, tmp_path: Path) -> None:
    """The pixels preset leaves clip_guidance_scale to the generator; the image records the value the run used."""
    output = tmp_path / "pixels-3-trained.png"
    quick = {"steps": 2, "cutn": 4}
    zoo_report.draw_and_read("pixels", "red", "circle", 3, output, settings=quick)

    def fake_generate(settings, progress):
        raise RuntimeError("redrawn")

    monkeypatch.setattr(zoo_report.artgen, "generate", fake_generate)
    zoo_report.draw_and_read("pixels", "red", "circle", 3, output, settings=quick)
    with pytest.raises(RuntimeError, match="redrawn"):
        zoo_report.draw_and_read("pixels", "red", "circle", 3, output, settings={**quick, "clip_guidance_scale": 2.0})


def test_an_image_recorded_before_a_setting_existed_is_read_back_at_that_settings_default(monkeypatch, tmp_path):
    """A recipe that does not name a later setting was drawn with its default; a non-default value redraws."""
    output = tmp_path / "pixels-4-trained.png"
    quick = {"steps": 2, "cutn": 4}
    zoo_report.draw_and_read("pixels", "red", "circle", 4, output, settings=quick)
    metadata = read_metadata(output)
    del metadata["settings"]["symmetry"]
    with Image.open(output) as picture:
        save_png(picture.convert("RGB"), output, metadata, overwrite=True)

    def fake_generate(settings, progress):
        raise RuntimeError("redrawn")

    monkeypatch.setattr(zoo_report.artgen, "generate", fake_generate)
    zoo_report.draw_and_read("pixels", "red", "circle", 4, output, settings=quick)
    with pytest.raises(RuntimeError, match="redrawn"):
        zoo_report.draw_and_read("pixels", "red", "circle", 4, output, settings={**quick, "symmetry": "vertical"})
