import dataclasses

import kornia.augmentation as K
import torch

from artgen.cutouts import CutoutSettings, MakeCutouts, overview_cutouts

PLAIN = CutoutSettings(cutn=8, flip=False, affine=False, perspective=False, jitter=False, noise=0.0)


def test_shape_range_and_gradient():
    image = torch.rand(2, 3, 40, 56, requires_grad=True)
    cuts = MakeCutouts(16, CutoutSettings(cutn=5))(image)
    assert cuts.shape == (10, 3, 16, 16)
    cuts.sum().backward()
    assert image.grad.abs().sum() > 0


def test_constant_image_gives_constant_cutouts():
    image = torch.full((1, 3, 30, 30), 0.25)
    image[:, 1] = 0.75
    cuts = MakeCutouts(12, PLAIN)(image)
    assert torch.allclose(cuts[:, 0], torch.full_like(cuts[:, 0], 0.25), atol=1e-6)
    assert torch.allclose(cuts[:, 1], torch.full_like(cuts[:, 1], 0.75), atol=1e-6)


def test_huge_cut_pow_gives_whole_image_views():
    image = torch.rand(1, 3, 24, 24)
    cuts = MakeCutouts(24, CutoutSettings(cutn=4, cut_pow=1e-6, flip=False, affine=False, perspective=False,
                                          jitter=False, noise=0.0))(image)
    assert torch.allclose(cuts, image.expand(4, -1, -1, -1), atol=1e-5)


def test_cuts_are_image_major():
    image = torch.stack([torch.zeros(3, 20, 20), torch.ones(3, 20, 20)])
    cuts = MakeCutouts(8, PLAIN)(image)
    assert cuts.shape[0] == 2 * PLAIN.cutn
    assert cuts[:PLAIN.cutn].abs().max() < 1e-5 and (cuts[PLAIN.cutn:] - 1).abs().max() < 1e-5


def test_same_seed_same_cutouts_and_augments_change_things():
    image = torch.rand(1, 3, 32, 32)
    make = MakeCutouts(16, CutoutSettings(cutn=6))
    torch.manual_seed(3)
    first = make(image)
    torch.manual_seed(3)
    assert torch.equal(first, make(image))
    torch.manual_seed(3)
    plain = MakeCutouts(16, PLAIN.__class__(cutn=6, flip=False, affine=False, perspective=False, jitter=False,
                                            noise=0.0))(image)
    assert not torch.allclose(first, plain)


def test_each_switch_changes_the_output():
    image = torch.rand(1, 3, 32, 32)
    torch.manual_seed(0)
    base = MakeCutouts(16, PLAIN)(image)
    for switch in ("flip", "affine", "perspective", "jitter"):
        torch.manual_seed(0)
        switched = MakeCutouts(16, CutoutSettings(**{**PLAIN.__dict__, switch: True}))(image)
        assert not torch.allclose(base, switched), switch


def test_overview_views_are_whole_and_mirrored():
    image = torch.rand(2, 3, 16, 16)
    views = overview_cutouts(image, 16, 3)
    assert views.shape == (6, 3, 16, 16)
    assert torch.allclose(views[0], image[0], atol=1e-5)
    assert torch.allclose(views[1], image[0].flip(-1), atol=1e-5)
    assert torch.allclose(views[3], image[1], atol=1e-5)


class DegeneratePerspective(torch.nn.Module):
    """Kornia's perspective warp with every corner of crop 1 sent to one point: a singular homography."""

    def __init__(self):
        super().__init__()
        self.warp = K.RandomPerspective(distortion_scale=0.7, p=1.0)

    def forward(self, cuts):
        self.warp(cuts.detach())
        params = dict(self.warp._params)
        params["end_points"] = params["end_points"].clone()
        params["end_points"][1] = params["end_points"][1][0]
        return self.warp(cuts, params=params)


def test_a_crop_that_an_augmentation_turns_to_nan_falls_back_to_the_plain_crop():
    """Such a draw once ended a 100-step offline VQGAN run with a NaN loss at step 24."""
    image = torch.rand(1, 3, 24, 24, requires_grad=True)
    broken = MakeCutouts(8, dataclasses.replace(PLAIN, cutn=3))
    broken.augment = torch.nn.Sequential(DegeneratePerspective())
    assert not torch.isfinite(broken.augment(torch.rand(3, 3, 8, 8))).all()  # the fixture does break a crop
    torch.manual_seed(0)
    cuts = broken(image)
    torch.manual_seed(0)
    plain = MakeCutouts(8, dataclasses.replace(PLAIN, cutn=3))(image)
    assert torch.isfinite(cuts).all()
    assert torch.equal(cuts[1], plain[1])
    cuts.sum().backward()
    assert torch.isfinite(image.grad).all() and image.grad.abs().sum() > 0
