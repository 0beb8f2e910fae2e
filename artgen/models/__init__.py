"""Model code: architectures whose state dicts equal the released checkpoints', and how to find and build them.

Design: model modules (vqgan, unet) define networks and load real files without running pickled code
(checkpoints, torchscript); hub maps known names to files in the cache and downloads them; factory builds a
model from a name or local paths. Nothing here knows about CLIP, settings or the command line.
"""
