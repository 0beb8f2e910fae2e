"""The shipped ``shapes-clip`` perceptor still knows colours and shapes, loaded exactly as artgen loads it.

Why: the zoo files are trained once and committed; this guards against a stale or mismatched config, a
broken float16 export, or a change in artgen's loading or normalization that would quietly blind it.
Scenes come from a seed the training script never uses, so this is held-out accuracy.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from artgen.perceptor import ClipSpec, Perceptor, load_perceptor, register_model_config
from lab.scenes import SHAPE_COLOURS, SHAPES, make_dataset
from lab.training import train_clip

ZOO = Path(__file__).resolve().parents[1] / "artgen" / "zoo"
HELD_OUT_SEED = 7  # training uses seed 0 and its own evaluation seed 1
SCENES = 120


@pytest.fixture(scope="module")
def perceptor() -> Perceptor:
    name = register_model_config(ZOO / "shapes-clip.json")
    spec = ClipSpec(name, None, 1.0, str(ZOO / "shapes-clip.safetensors"))
    return load_perceptor(spec, torch.device("cpu"))


@pytest.fixture(scope="module")
def scenes() -> tuple[torch.Tensor, list[str], list[str]]:
    """Held-out one-shape scenes as [N,3,64,64] in [0,1], with each one's colour and shape."""
    data = list(make_dataset(SCENES, HELD_OUT_SEED, size=64, max_shapes=1))
    images = torch.stack([torch.from_numpy(np.array(image)).permute(2, 0, 1) for image, _, _ in data]).float() / 255
    return images, [s.shapes[0].colour for _, _, s in data], [s.shapes[0].kind for _, _, s in data]


def class_vectors(perceptor: Perceptor, attribute: str) -> torch.Tensor:
    """A unit vector per colour (shape): "a {colour} {shape}" averaged over every shape (colour)."""
    rows = []
    for value in (SHAPE_COLOURS if attribute == "colour" else SHAPES):
        prompts = ([f"a {value} {shape}" for shape in SHAPES] if attribute == "colour"
                   else [f"a {colour} {value}" for colour in SHAPE_COLOURS])
        rows.append(F.normalize(perceptor.encode_text(prompts).mean(0), dim=-1))
    return torch.stack(rows)


@pytest.mark.parametrize("attribute", ["colour", "shape"])
def test_zero_shot_accuracy_on_held_out_scenes(perceptor, scenes, attribute: str) -> None:
    images, colours, kinds = scenes
    resized = F.interpolate(images, size=perceptor.input_size, mode="bilinear", align_corners=False)
    with torch.no_grad():
        guesses = (perceptor.encode_image(resized) @ class_vectors(perceptor, attribute).T).argmax(-1)
    names = list(SHAPE_COLOURS) if attribute == "colour" else list(SHAPES)
    truth = torch.tensor([names.index(v) for v in (colours if attribute == "colour" else kinds)])
    accuracy = (guesses == truth).float().mean().item()
    assert accuracy >= 0.9, f"{attribute} zero-shot accuracy {accuracy:.3f} on {SCENES} held-out scenes"


def test_shipped_weights_are_small_float16() -> None:
    from safetensors.torch import load_file

    path = ZOO / "shapes-clip.safetensors"
    assert path.stat().st_size <= 10 * 2**20
    assert {t.dtype for t in load_file(str(path)).values() if t.is_floating_point()} == {torch.float16}


def test_training_noise_draws_a_std_per_crop_and_zero_leaves_crops_alone() -> None:
    """Each crop gets its own noise strength, none above --noise-max; 0 must leave crops and the random stream
    untouched, so a clean-crop run draws the same crops and captions as before the option existed."""
    crops = torch.rand(64, 3, 16, 16)
    generator = torch.Generator().manual_seed(0)
    assert train_clip.add_noise(crops, generator, 0.0) is crops
    assert torch.equal(torch.rand(4, generator=generator), torch.rand(4, generator=torch.Generator().manual_seed(0)))

    noise = train_clip.add_noise(crops, torch.Generator().manual_seed(1), 0.1) - crops
    strengths = noise.flatten(1).std(dim=1)
    assert strengths.max() < 0.1 * 1.1, "a crop's noise is stronger than --noise-max"
    assert strengths.min() < 0.03 and strengths.max() > 0.07, "the strength is not drawn anew for each crop"


def test_swapped_captions_name_the_other_kinds_for_the_same_shape() -> None:
    """The shape loss's negatives: each scene's captions with one shape renamed as each other kind, phrasing by
    phrasing and mirrored alike, so that only the kind tells the caption from its twins."""
    words = {}

    def tokenizer(texts: list[str]) -> torch.Tensor:  # one id per distinct caption, so ids map back to text
        return torch.tensor([words.setdefault(text, len(words)) for text in texts])

    _, tokens, swapped = train_clip.build_pool(6, seed=3, tokenizer=tokenizer)
    text = {index: caption for caption, index in words.items()}
    scenes = [scene for _, _, scene in make_dataset(6, 3, size=64, max_shapes=2)]
    for scene, own, twins in zip(scenes, tokens, swapped):
        kinds = {shape.kind for shape in scene.shapes}
        for twin in twins:
            for side in range(2):
                for own_caption, twin_caption in zip(own[side].tolist(), twin[side].tolist()):
                    before, after = text[own_caption].split(), text[twin_caption].split()
                    changed = [(a, b) for a, b in zip(before, after) if a != b]
                    assert len(before) == len(after) and len(changed) == 1, (text[own_caption], text[twin_caption])
                    assert changed[0][0] in kinds and changed[0][1] in SHAPES
        renamed = {text[twin[0][0].item()] for twin in twins}
        assert len(renamed) == 3, "the three twins must name three different kinds"


def test_shape_loss_is_low_only_when_the_image_matches_its_own_caption() -> None:
    own = F.normalize(torch.randn(5, 8), dim=-1)
    twins = F.normalize(torch.randn(5, 3, 8), dim=-1)
    scale = torch.tensor(50.0)
    matching = train_clip.shape_loss(own, own, twins, scale)
    mistaken = train_clip.shape_loss(twins[:, 0], own, twins, scale)
    assert matching < 0.1 < mistaken
