"""The differentiable point renderer, family-agnostic: PyTorch3D-compatible rasterisation and compositing.

Modules:

* ``renderer``: ``PointRenderer`` (learnable colours and radii per category and point); ``scene()`` gathers the
  bank's points and runs the point operations, ``render()`` draws them.
* ``settings``: the renderer's settings (``RendererConfig`` and its sub-sections) and their checks, torch-free.
* ``point_ops_settings``: the point operations' registrations (``POINT_OPS``, ``point_op``, ``pipeline()``: keys,
  own section, checks, streams, order), torch-free; ``point_ops``: their code (``Points``, ``SceneContext``,
  ``run_point_ops``): one signature, one registration each, run in the documented order.
* Their kernels: ``augment`` (sub-sampling, scale, shift, jitter, PointWOLF, depth hue, mixing), ``pointwolf``
  (published PointWOLF), ``corrupt`` (ModelNet-C), ``views`` (cameras and projection), ``window`` (Anderson &
  Farrell's window and flips), ``hsv`` (OpenCV's 8-bit HSV), ``instances`` (what the families' per-image
  drawers share, ``InstanceDraw``, and ``build_instances``, which builds the drawer a bank's ``Family.drawer``
  names; the drawers themselves live in their family's package, ``dr_fdsl/families/<name>/instances.py``).
* Images: ``multi`` (several objects composed into one scene), ``background`` (diamond-square), ``structures``
  (Scene, Fragments, constants), ``raster_pytorch3d`` and ``raster_sort`` (the two rasterisers, registered by name
  in ``rasterizers``), ``composite`` (weights, compositing, ``render_scene``), ``grid`` (image grids).
* Randomness: ``keyed_random`` (keyed per-image draws) and ``streams`` (their stream numbers).

Importing the package imports no torch (the names below are imported on first use, PEP 562), so that the
torch-free ``settings`` and ``point_ops_settings`` load without it. The function ``composite`` is imported from
its module (``from dr_fdsl.render.composite import composite``): once that module is loaded the package's attribute
of that name is the module.
"""

_EXPORTS = {
    "RASTERIZERS": "rasterizers", "Fragments": "structures", "PointRenderer": "renderer", "Rendered": "renderer",
    "Scene": "structures", "fragment_weights": "composite", "image_grid": "grid",
    "render_grid": "grid", "render_scene": "composite", "save_grid": "grid",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    globals()[name] = value  # once
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
