"""The differentiable point renderer, family-agnostic: PyTorch3D-compatible rasterisation and compositing.

Modules:

* ``renderer``: ``PointRenderer`` (learnable colours and radii per category and point); ``scene()`` gathers the
  bank's points and runs the point operations, ``render()`` draws them.
* ``point_ops``: the point operations (``Points``, ``SceneContext``, ``POINT_OPS``, ``PIPELINE``): one signature,
  one registration each, run in the documented order.
* Their kernels: ``augment`` (sub-sampling, scale, shift, jitter, PointWOLF, depth hue, mixing), ``pointwolf``
  (published PointWOLF), ``corrupt`` (ModelNet-C), ``views`` (cameras and projection), ``window`` (Anderson &
  Farrell's window and flips), ``hsv`` (OpenCV's 8-bit HSV), ``instances`` (what the families' per-image
  drawers share, ``InstanceDraw``, and ``build_instances``, which builds the drawer a bank's ``Family.drawer``
  names; the drawers themselves live in their family's package, ``dr_fdsl/families/<name>/instances.py``).
* Images: ``multi`` (several objects composed into one scene), ``background`` (diamond-square), ``structures``
  (Scene, Fragments, constants), ``raster_pytorch3d`` and ``raster_sort`` (the two rasterisers, registered by name
  in ``rasterizers``), ``composite`` (weights, compositing, ``render_scene``), ``grid`` (image grids).
* Randomness: ``keyed_random`` (keyed per-image draws) and ``streams`` (their stream numbers).
"""

from dr_fdsl.render.composite import composite, fragment_weights, render_scene
from dr_fdsl.render.grid import image_grid, render_grid, save_grid
from dr_fdsl.render.rasterizers import RASTERIZERS
from dr_fdsl.render.renderer import PointRenderer, Rendered
from dr_fdsl.render.structures import Fragments, Scene

__all__ = ["RASTERIZERS", "Fragments", "PointRenderer", "Rendered", "Scene", "composite", "fragment_weights",
           "image_grid", "render_grid", "render_scene", "save_grid"]
