"""The bundled models: tiny CLIP, VQGAN and diffusion models trained on synthetic scenes (see training/)."""
