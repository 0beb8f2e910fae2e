"""A diffusion model as a prior for generators that have none of their own (score distillation, as in DreamFusion).

VQGAN+CLIP finds whatever CLIP scores well under cutouts, and a small CLIP scores smeared blobs about as well as
clean shapes. A diffusion UNet knows what pictures look like: noise the rendered image to a random step t, let the
UNet predict the noise, and the difference between its prediction and the noise that was added points from the
image toward pictures the UNet knows. That difference, used as the image's gradient, is the prior.

An unconditional UNet alone pulls toward any picture it knows, not the prompt's: on the bundled models it drew
clean shapes in the wrong colours. So, as the diffusion generator does, CLIP guides the UNet's prediction
(its gradient w.r.t. x_t, RMS-limited by --clamp-max and --clamp-by-signal; artgen.guidance), and the prior pulls
toward pictures the UNet knows that also match the prompts.

The generator that wants a prior builds it and adds its pull to the objective's loss (artgen.generators.vqgan);
the objective knows nothing of it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .guidance import blend_prediction, limit_guidance
from .models.sampling import create_diffusion
from .models.unet import UNetModel

# The noise steps the prior samples from, as shares of the schedule: the very first steps see the image almost
# unchanged (nothing to learn), the very last see almost pure noise (any picture fits).
T_RANGE = (0.05, 0.95)
GUIDANCE_CUTOUTS = 16  # random-crop cutouts CLIP scores the UNet's prediction with, per draw

# CLIP's loss on a batch of images in [0, 1]: the objective's prompt loss.
ClipLoss = Callable[[Tensor], Tensor]


class DiffusionPrior:
    """Callable on a rendered image [N,3,H,W] in [0,1]: a zero-valued surrogate loss whose gradient is the prior's
    pull."""

    def __init__(self, unet: UNetModel, alphas_cumprod: Tensor, draws: int, guidance_scale: float,
                 clamp_max: float | None = None, clamp_by_signal: bool = False) -> None:
        self.unet = unet
        self.alphas_cumprod = alphas_cumprod
        self.draws = draws
        self.guidance_scale = guidance_scale
        self.clamp_max = clamp_max
        self.clamp_by_signal = clamp_by_signal

    @classmethod
    def for_schedule(cls, unet: UNetModel, diffusion_steps: int, noise_schedule: str, draws: int,
                     guidance_scale: float, clamp_max: float | None = None, clamp_by_signal: bool = False,
                     device: torch.device | str = "cpu") -> "DiffusionPrior":
        """The prior of a UNet trained with ``diffusion_steps`` steps of ``noise_schedule`` (frozen here)."""
        process = create_diffusion(diffusion_steps, noise_schedule, "", False)
        alphas_cumprod = torch.tensor(process.alphas_cumprod, dtype=torch.float32, device=device)
        return cls(unet.eval().requires_grad_(False), alphas_cumprod, draws, guidance_scale, clamp_max,
                   clamp_by_signal)

    def __call__(self, image: Tensor, clip_loss: ClipLoss | None = None) -> Tensor:
        size = self.unet.config.image_size
        # float32: a decoder under bf16 autocast hands over bf16, which antialiased resizing lacks on the CPU
        x0 = F.interpolate(image.float().clamp(0, 1), size=(size, size), mode="bilinear", align_corners=False,
                           antialias=True).mul(2).sub(1)
        x0 = x0.repeat(self.draws, 1, 1, 1)
        steps = len(self.alphas_cumprod)
        t = torch.randint(int(T_RANGE[0] * steps), int(T_RANGE[1] * steps), (x0.shape[0],), device=x0.device)
        alpha_bar = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        noise = torch.randn_like(x0)
        x_t = alpha_bar.sqrt() * x0.detach() + (1 - alpha_bar).sqrt() * noise
        eps, guidance = self._predict(x_t, t, alpha_bar, clip_loss)
        residual = eps - noise - (1 - alpha_bar).sqrt() * guidance
        # d/dx0 of this sum is the residual itself (summed over draws, averaged over pixels); its value means
        # nothing, so it is taken back out and the reported loss stays CLIP's and the regularizers'
        surrogate = (residual.detach() * x0).mean() * self.draws
        return surrogate - surrogate.detach()

    def _predict(self, x_t: Tensor, t: Tensor, alpha_bar: Tensor, clip_loss: ClipLoss | None) -> tuple[Tensor, Tensor]:
        """The UNet's noise prediction at x_t, and CLIP's guidance gradient there (zero without guidance)."""
        if not (self.guidance_scale and clip_loss):
            with torch.no_grad():
                return self._eps(x_t, t), torch.zeros_like(x_t)
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            eps = self._eps(x, t)
            predicted = (x - (1 - alpha_bar).sqrt() * eps) / alpha_bar.sqrt()
            blended = blend_prediction(predicted, x, (1 - alpha_bar).sqrt())  # scored as the diffusion generator does
            grad = -torch.autograd.grad(self.guidance_scale * clip_loss(blended.add(1).div(2)), x)[0]
        limit = self.clamp_max
        if limit is not None and self.clamp_by_signal:
            limit = limit * alpha_bar.sqrt()
        return eps.detach(), limit_guidance(grad, limit, per_draw=True)

    def _eps(self, x_t: Tensor, t: Tensor) -> Tensor:
        output = self.unet(x_t, t).float()
        return output[:, :3]  # a learned-sigma UNet adds three variance channels
