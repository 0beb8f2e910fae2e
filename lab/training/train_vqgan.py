"""Train ``shapes-vqgan``: a tiny f8 VQGAN, in taming-transformers' own file format, for artgen's synthetic scenes.

Why: artgen's VQGAN generator needs an autoencoder that ships with the package and works offline, yet still
draws something meaningful, so that tests and demos can run "a red circle" end to end without downloading a
400 MB ImageNet model. This one is ~1.1 M parameters (~2.3 MB in float16) and is trained from nothing on
``lab.scenes`` in about ten minutes on a CPU. It is written as a real taming ``.yaml`` plus a
Lightning-style ``.ckpt``, so artgen loads it through ``load_vqgan`` exactly like the published models.

Result: held-out MSE 0.0046 on [0,1] pixels (PSNR 23 dB); every one-shape scene comes back in its own
colour, and about 70% also keep a shape the CLIP-free checker reads the same (small stars and triangles lose
their points). An earlier version trained with plain L1 and 256 codes drew every shape grey (MSE 0.025);
see chroma_weighted_l1 for why, and what fixed it.

Run it from the repository root:

    .venv/bin/python -m lab.training.train_vqgan

It writes ``artgen/zoo/shapes-vqgan.yaml``, ``shapes-vqgan.ckpt`` (weights in float16) and
``shapes-vqgan.metrics.json`` (held-out reconstruction error, codebook usage, size, time, command). On 2
shared CPU cores with one thread the shipped run trained in 487 s (0.24 s a step) while the other core was
busy; evaluation adds under a minute.

Training is a plain VQ-VAE objective, as taming's first stage without its GAN and LPIPS terms (flat-coloured
shapes need neither): chroma-weighted L1 reconstruction on [-1, 1] images, codebook loss ||sg[z] - e||^2 and
commitment loss 0.25 ||z - sg[e]||^2, with the straight-through quantized code fed to the decoder. Codes left unused
for a while are restarted on recent encoder outputs, so the codebook stays in use. The convolutions run
under bfloat16 autocast (half again as fast on this CPU); quantization and losses stay in float32.

Reproducibility: every source of randomness is seeded, one thread is used and deterministic algorithms are
on, so rerunning with the same torch on the same machine gives bit-identical weights (checked: two runs wrote
weights with the same ``state_sha256``, which the metrics record so that you can check). On 2026-12-02 a rerun on
another machine (AMD EPYC, 5.5 minutes) wrote a byte-identical ``.ckpt``, so the shipped weights retrain bit-for-bit
there too. Other CPUs or torch versions may differ in the last bits (bfloat16 kernels especially), and training
amplifies such differences, so there the weights may differ; the metrics should land close.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import Tensor

from artgen.models.vqgan import VQGAN, load_vqgan
from lab.scenes import make_dataset
from lab.shape_checker import read  # the CLIP-free judge of colour and shape

REPO = Path(__file__).resolve().parents[2]

NAME = "shapes-vqgan"
# f8: four levels, three halvings, so a 64x64 scene becomes 8x8 codes. Channels stay at 32-64 because
# full-resolution convolutions dominate the cost on a CPU. (With 32 channels GroupNorm's 32 groups normalize each
# channel alone; training with 4 groups instead drew the same grey shapes, so that was not the cause.)
DDCONFIG = {"double_z": False, "z_channels": 32, "resolution": 64, "in_channels": 3, "out_ch": 3, "ch": 32,
            "ch_mult": [1, 1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [8], "dropout": 0.0}
EMBED_DIM, N_EMBED = 32, 1024  # with 256, shape colours lost out to backgrounds and edges
# Written into the .yaml for taming's sake: its trainer would build this loss (LPIPS + a patch discriminator
# that starts late); our checkpoint carries no loss.* weights, which taming initializes fresh.
LOSS_CONFIG = {"target": "taming.modules.losses.vqperceptual.VQLPIPSWithDiscriminator",
               "params": {"disc_conditional": False, "disc_in_channels": 3, "disc_start": 250001,
                          "disc_weight": 0.8, "codebook_weight": 1.0}}
BETA = 0.25  # commitment weight, as in VQ-VAE and taming
TRAIN_SEED, EVAL_SEED = 0, 1  # scene streams: training and held-out evaluation never share a scene
LIGHTNING_VERSION = "1.0.8"  # the pytorch_lightning release whose checkpoint layout taming's downloads have


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=8,
                        help="small, as progress is bound by the number of updates: "
                             "batch 8 reached batch 16's loss in half the compute")
    parser.add_argument("--scenes", type=int, default=4000, help="size of the pre-rendered training pool")
    parser.add_argument("--lr", type=float, default=1e-3, help="peak Adam learning rate (cosine decay after warm-up)")
    parser.add_argument("--restart-every", type=int, default=100, help="steps between dead-code restarts")
    parser.add_argument("--eval-scenes", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0, help="seeds weights, batches, flips and code restarts")
    parser.add_argument("--chroma-weight", type=float, default=4.0,
                        help="extra L1 weight on colourful pixels (see chroma_weighted_l1); 1.5 was too little")
    parser.add_argument("--out", type=Path, default=REPO / "artgen" / "zoo")
    return parser.parse_args()


def taming_config(lr: float, batch: int) -> dict[str, Any]:
    """The .yaml content. taming multiplies base_learning_rate by the batch size, so store lr / batch."""
    return {"model": {"base_learning_rate": lr / batch, "target": "taming.models.vqgan.VQModel", "params": {
        "embed_dim": EMBED_DIM, "n_embed": N_EMBED, "monitor": "val/rec_loss", "ddconfig": DDCONFIG,
        "lossconfig": LOSS_CONFIG}}}


def render_pool(count: int, seed: int, max_shapes: int = 2) -> Tensor:
    """Scenes as one uint8 tensor [N,3,64,64]: rendering once keeps every training step's data cost nil."""
    images = [np.array(image) for image, _, _ in make_dataset(count, seed, size=64, max_shapes=max_shapes)]
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()


def to_model_range(images: Tensor) -> Tensor:
    """uint8 [0,255] -> float [-1,1], the range taming's models take and give."""
    return images.float() / 127.5 - 1


def code_indices(z: Tensor, codebook: Tensor) -> Tensor:
    """Nearest codebook row for each vector of z [B,D,H,W], flattened; the same distances as vector_quantize."""
    flat = z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])
    distances = flat.pow(2).sum(1, keepdim=True) + codebook.pow(2).sum(1) - 2 * flat @ codebook.T
    return distances.argmin(dim=1)


def restart_dead_codes(codebook: Tensor, counts: Tensor, z: Tensor, generator: torch.Generator) -> int:
    """Move codes that no vector chose since the last restart onto random current encoder outputs.

    Why: a code far from every encoder output never gets a gradient and stays dead; placed on an output it
    starts winning vectors at once. At step 0 every code is dead, which initializes the codebook from data.
    """
    dead = (counts == 0).nonzero().squeeze(1)
    if dead.numel():
        flat = z.detach().permute(0, 2, 3, 1).reshape(-1, z.shape[1])
        # Without replacement while the batch has enough vectors; a code that lands on a duplicate of another stays dead
        # and is restarted again next time.
        picks = torch.randperm(flat.shape[0], generator=generator).repeat(1 + dead.numel() // flat.shape[0])
        picks = picks[: dead.numel()]
        with torch.no_grad():
            codebook[dead] = flat[picks]
    return dead.numel()


def chroma_weighted_l1(y: Tensor, x: Tensor, weight: float) -> Tensor:
    """L1 where a pixel counts 1 + weight * chroma, chroma being max - min over RGB in [0, 1] of the target or
    the reconstruction, whichever is larger.

    Why: with plain L1 (or MSE) the model settles on drawing every shape in the mean of the six colours, a
    grey, and stays there: backgrounds cover most pixels and are neutral, so colour is a small share of the
    error, and 2000 steps did not get out of that minimum. Weighting colourful target pixels makes drawing
    the right hue pay; weighting colourful reconstructions too stops the model from tinting the neutral
    backgrounds, which it did when only the target's chroma counted.
    """
    error = (y - x).abs()
    chroma = torch.maximum(chroma_of(x), chroma_of(y.detach()))
    return (error * (1 + weight * chroma)).mean()


def chroma_of(images: Tensor) -> Tensor:
    """Per pixel max - min over RGB of [-1, 1] images, as a share of the [0, 1] range: [B,1,H,W]."""
    return (images.amax(1, keepdim=True) - images.amin(1, keepdim=True)) / 2


def learning_rate(step: int, steps: int, peak: float, warmup: int = 50) -> float:
    """Linear warm-up, then cosine decay to 5% of the peak: the late small steps polish edges."""
    if step < warmup:
        return peak * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return peak * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress)))


def train(model: VQGAN, pool: Tensor, args: argparse.Namespace) -> list[dict[str, float]]:
    """The VQ-VAE loop; returns a short log of losses and restarts."""
    generator = torch.Generator().manual_seed(args.seed)
    codebook = model.quantize.embedding.weight
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    counts = torch.zeros(N_EMBED, dtype=torch.long)
    log, started = [], time.time()
    for step in range(args.steps):
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, args.steps, args.lr)
        batch = pool[torch.randint(len(pool), (args.batch,), generator=generator)]
        flip = torch.rand(args.batch, generator=generator) < 0.5
        x = to_model_range(torch.where(flip[:, None, None, None], batch.flip(-1), batch))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            z = model.quant_conv(model.encoder(x))
        z = z.float()
        restarted = 0
        # Restart only in the first 80% of training, so the last restarted codes are trained before the end.
        if step % args.restart_every == 0 and step < 0.8 * args.steps:
            restarted = restart_dead_codes(codebook, counts, z, generator)
            counts.zero_()
        indices = code_indices(z.detach(), codebook.detach())
        counts += torch.bincount(indices, minlength=N_EMBED)
        nearest = codebook[indices].view(z.shape[0], z.shape[2], z.shape[3], -1).permute(0, 3, 1, 2)
        z_q = z + (nearest - z).detach()  # straight through: the decoder's gradient reaches the encoder
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = model.decode(z_q)
        reconstruction = chroma_weighted_l1(y.float(), x, args.chroma_weight)
        codebook_loss = F.mse_loss(nearest, z.detach())
        commitment = F.mse_loss(z, nearest.detach())
        loss = reconstruction + codebook_loss + BETA * commitment
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if step % 50 == 0 or step == args.steps - 1 or restarted:
            entry = {"step": step, "l1": round(reconstruction.item(), 5), "codebook": round(codebook_loss.item(), 5),
                     "restarted": restarted, "seconds": round(time.time() - started, 1)}
            log.append(entry)
            print(json.dumps(entry), flush=True)
    return log


def lightning_checkpoint(model: VQGAN, args: argparse.Namespace) -> dict[str, Any]:
    """The dict pytorch_lightning saves, holding only tensors, numbers, strings, lists and dicts.

    The Adam moments are left out (they would triple the file); the param groups say how it was trained.
    """
    state = {key: value.detach().to(torch.float16).contiguous() for key, value in model.state_dict().items()}
    group = {"lr": learning_rate(args.steps - 1, args.steps, args.lr), "betas": [0.9, 0.999], "eps": 1e-8,
             "weight_decay": 0, "amsgrad": False, "params": list(range(len(list(model.parameters()))))}
    return {"epoch": 0, "global_step": args.steps, "pytorch-lightning_version": LIGHTNING_VERSION,
            "state_dict": state, "optimizer_states": [{"state": {}, "param_groups": [group]}], "lr_schedulers": []}


def state_sha256(state: dict[str, Tensor]) -> str:
    """A hash of the weights alone (names, shapes, bytes), to check bit-for-bit reruns."""
    digest = hashlib.sha256()
    for key in sorted(state):
        tensor = state[key].contiguous()
        digest.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


@torch.no_grad()
def evaluate(model: VQGAN, count: int, seed: int) -> dict[str, float]:
    """Held-out reconstruction error on [0,1] pixels, codebook usage, and colour/shape agreement.

    Agreement: on one-shape scenes, the share whose reconstruction ``shape_checker.read`` reads as it reads
    the original, i.e. the colour and shape survived the round trip through the codes.
    """
    images = render_pool(count, seed)
    x = to_model_range(images)
    reconstructed = model.decode(model.encode(x)).clamp(-1, 1)
    mse = F.mse_loss((reconstructed + 1) / 2, images.float() / 255).item()
    used = code_indices(model.quant_conv(model.encoder(x)), model.codebook).unique().numel()
    single = render_pool(count, seed + 1000, max_shapes=1)
    pixels = ((model.decode(model.encode(to_model_range(single))).clamp(-1, 1) + 1) * 127.5).round().byte()
    agree = sum(read(original.permute(1, 2, 0).numpy()) == read(copy.permute(1, 2, 0).numpy())
                for original, copy in zip(single, pixels))
    return {"mse": round(mse, 6), "psnr_db": round(10 * math.log10(1 / mse), 2),
            "codebook_usage": round(used / N_EMBED, 4), "codes_used": used,
            "one_shape_read_agreement": round(agree / count, 4)}


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(args.seed)
    started = time.time()
    pool = render_pool(args.scenes, TRAIN_SEED)
    config = taming_config(args.lr, args.batch)
    model = VQGAN.from_config(config).train()
    log = train(model, pool, args)
    seconds = time.time() - started

    args.out.mkdir(parents=True, exist_ok=True)
    config_path, checkpoint_path = args.out / f"{NAME}.yaml", args.out / f"{NAME}.ckpt"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False))
    checkpoint = lightning_checkpoint(model, args)
    torch.save(checkpoint, checkpoint_path)

    # Measure what ships: the float16 weights, loaded the way artgen loads any taming model, in float32.
    shipped = load_vqgan(config_path, checkpoint_path)
    metrics = {"heldout_seed": EVAL_SEED, "heldout_scenes": args.eval_scenes, **evaluate(shipped, args.eval_scenes,
                                                                                          EVAL_SEED),
               "parameters": sum(p.numel() for p in shipped.parameters()),
               "checkpoint_bytes": checkpoint_path.stat().st_size, "training_seconds": round(seconds, 1),
               "steps": args.steps, "batch": args.batch, "train_scenes": args.scenes, "train_seed": TRAIN_SEED,
               "torch": torch.__version__, "state_sha256": state_sha256(checkpoint["state_dict"]),
               "command": " ".join(["python", "-m", "lab.training.train_vqgan", *map(shlex.quote, sys.argv[1:])]),
               "final_log": log[-1]}
    (args.out / f"{NAME}.metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    print(json.dumps(metrics, indent=2))


if __name__ == "__main__":
    main()
