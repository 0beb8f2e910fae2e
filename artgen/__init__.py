"""artgen: optimization-based art with VQGAN+CLIP and CLIP-guided diffusion.

    import artgen
    result = artgen.generate(prompts=["a lighthouse at dusk"], steps=100)
    print(result.path)

Design: the public API is functions over settings: ``generate``, ``edit`` and ``animate`` take a Settings (see
``build_settings``) or keyword settings by their flag names, and return what they wrote. The CLI, presets and
PNG recipes use the same names; ``upscale`` takes a picture, UpscaleSettings and the same keyword settings. Heavy modules (torch models, CLIP) load only when a run starts.
"""

__version__ = "0.1.0"

from .settings import AnimationSettings, RunSettings, Settings, UpscaleSettings, build_settings  # noqa: E402


def generate(settings: "Settings | None" = None, preset: "str | None" = None, progress: bool = True, **overrides):
    """Optimize one image and write it; see artgen.run.generate. Imported lazily to keep `import artgen` light."""
    from .run import generate as run_generate

    return run_generate(settings, preset=preset, progress=progress, **overrides)


def edit(image, settings: "Settings | None" = None, preset: "str | None" = None, progress: bool = True, **overrides):
    """Repaint what ``mask`` / ``mask_box`` marks of ``image``, or grow it (``extend``); see artgen.run.edit."""
    from .run import edit as run_edit

    return run_edit(image, settings, preset=preset, progress=progress, **overrides)


def animate(settings: "Settings | None" = None, preset: "str | None" = None, progress: bool = True, **overrides):
    """Render a frame sequence (or stylize ``video_input``) and encode it; see artgen.animation.animate."""
    from .animation import animate as run_animate

    return run_animate(settings, preset=preset, progress=progress, **overrides)


def upscale(image, upscale: "UpscaleSettings | None" = None, preset: "str | None" = None, progress: bool = True,
            **overrides):
    """Enlarge a picture 2 or 4 times and refine it tile by tile; see artgen.upscale.upscale."""
    from .upscale import upscale as run_upscale

    return run_upscale(image, upscale, preset=preset, progress=progress, **overrides)


__all__ = ["AnimationSettings", "RunSettings", "Settings", "UpscaleSettings", "animate", "build_settings", "edit",
           "generate", "upscale", "__version__"]
