"""Guidance by composition: a denoiser and an objective make a guided denoiser that any sampler can step.

Design: as in the CLIP-guided diffusion notebooks, the objective scores what the model predicts the finished
picture to be (blended with x_t by the step's noise share), its gradient with respect to x_t is limited in
size, and the model's prediction is moved along it: the mean by variance * gradient (what DDPM steps with)
and eps / pred_xstart by the score correction (what DDIM steps with). :func:`guided_denoiser` does all of
that inside one call of the denoiser, so a sampler (artgen.models.sampling) sees only another denoiser and
knows nothing of CLIP, and the step's loss comes back in the denoiser's output for the loop to report. The
same blend and limit serve the VQGAN generator's diffusion prior (artgen.prior).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .models.sampling import Denoised, Denoiser, Diffusion, gather

if TYPE_CHECKING:
    from .loop import Guide


def blend_prediction(predicted: Tensor, x_t: Tensor, noise_share: Tensor) -> Tensor:
    """What the objective scores at step t: the predicted clean picture mixed with x_t by the step's noise share
    (sqrt(1 - alpha-bar)), so mostly the prediction while x_t is mostly noise, and mostly x_t itself once it holds
    the picture. The diffusion generator and the prior score the same thing, so one preset's guidance suits both.

    Both weights are formed in ``noise_share``'s precision (the schedule's float64) before they meet the images.
    """
    return predicted * noise_share.to(predicted.dtype) + x_t * (1 - noise_share).to(x_t.dtype)


def limit_guidance(grad: Tensor, limit: float | Tensor | None, per_draw: bool = False) -> Tensor:
    """The guidance gradient with NaNs zeroed and its RMS cut to at most ``limit`` (None: left as it is), over the
    whole batch or, with ``per_draw``, over each draw on its own (``limit`` may hold one value per draw). The raw
    gradient's size swings by orders of magnitude between steps; the limit keeps any one step from taking over."""
    grad = torch.nan_to_num(grad)
    if limit is None:
        return grad
    rms = grad.flatten(1).square().mean(1).sqrt().view(-1, 1, 1, 1) if per_draw else grad.square().mean().sqrt()
    return grad * rms.clamp(max=limit) / rms.clamp(min=1e-12)


def apply_gradient(diffusion: Diffusion, out: Denoised, x_t: Tensor, t: Tensor, grad: Tensor) -> Denoised:
    """A denoiser's output moved along ``grad``, the gradient of a log-probability with respect to x_t.

    ``mean`` moves by variance * grad (Sohl-Dickstein; what DDPM steps with) and ``eps`` / ``pred_xstart`` by the
    score correction eps - sqrt(1 - alpha-bar) * grad (Song et al.; what DDIM steps with). pred_xstart moves by
    what predict_xstart_from_eps makes of the eps shift, added directly so that a zero gradient changes nothing.
    """
    noise_scale = gather(diffusion.sqrt_one_minus_alphas_cumprod, t, x_t)
    xstart_scale = gather(diffusion.sqrt_recipm1_alphas_cumprod, t, x_t) * noise_scale
    return {**out, "mean": out["mean"] + out["variance"] * grad, "eps": out["eps"] - noise_scale * grad,
            "pred_xstart": out["pred_xstart"] + xstart_scale * grad}


@dataclass(frozen=True)
class Guidance:
    """How the objective's gradient becomes guidance.

    ``clamp_max`` limits the gradient's RMS at each step (None: no limit); with ``clamp_by_signal`` the limit
    shrinks with sqrt(alpha-bar_t): x_t holds the picture only at that scale, so the model reads a push of size g
    on x_t as a change of g / sqrt(alpha-bar_t) in the picture, and the scaled limit gives every step the same
    reach instead of letting the first, noisiest steps (where the objective's gradient means least) set the
    colours. ``init`` ([N,3,H,W] in [-1,1]) with ``init_scale`` adds a pixel loss toward a start image.
    ``clip_denoised`` clips the prediction the sampler steps with to [-1,1] (the objective scores it unclipped).
    """

    clamp_max: float | None = None
    clamp_by_signal: bool = False
    init: Tensor | None = None
    init_scale: float = 0.0
    clip_denoised: bool = True

    def limit(self, diffusion: Diffusion, t: Tensor) -> float | Tensor | None:
        """The gradient's RMS limit at steps ``t``: a number, or one per image when it follows the signal."""
        if self.clamp_max is None or not self.clamp_by_signal:
            return self.clamp_max
        limits = [self.clamp_max * float(diffusion.alphas_cumprod[step]) ** 0.5 for step in t.tolist()]
        return torch.tensor(limits, device=t.device).view(-1, 1, 1, 1)


def guided_denoiser(diffusion: Diffusion, denoise: Denoiser, guide: Guide, guidance: Guidance) -> Denoiser:
    """``denoise`` guided toward a lower ``guide.loss``: calling the result at (x_t, t) runs the model with grad
    on x_t, scores the blended prediction (as an image in [0,1]), takes the gradient with ``guide.gradient``
    (Ctrl-C stops it mid-pass), limits it, and returns the prediction moved along it (:func:`apply_gradient`)
    with the objective's ``loss`` added.

    ``denoise`` must not clip its prediction: the objective scores the raw one, and the sampler gets it clipped
    when ``guidance.clip_denoised``. The model and the objective run in ``guide.forward()`` (e.g. autocast); the
    gradient and the guidance do not.
    """

    def guided(x_t: Tensor, t: Tensor) -> Denoised:
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            with guide.forward():
                out = denoise(x, t)
                noise_share = gather(diffusion.sqrt_one_minus_alphas_cumprod, t, x, dtype=torch.float64)
                blended = blend_prediction(out["pred_xstart"], x, noise_share)
                loss = guide.loss(blended.add(1).div(2))
            total = loss.float()
            if guidance.init_scale and guidance.init is not None:
                total = total + guidance.init_scale * (blended - guidance.init).pow(2).mean()
            grad = -guide.gradient(total, x)
        grad = limit_guidance(grad, guidance.limit(diffusion, t))
        out = {key: value.detach() for key, value in out.items()}
        if guidance.clip_denoised:
            out = diffusion.clipped(out, x_t, t)
        return {**apply_gradient(diffusion, out, x_t, t, grad), "loss": loss.detach()}

    return guided
