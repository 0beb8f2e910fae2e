"""The bundled models: tiny CLIP, VQGAN and diffusion models trained on synthetic scenes.

They are package data, so ``shapes-*`` models work offline; how they were trained and how well they work is in the
lab, outside the package (lab/README.md, lab/training/).
"""
