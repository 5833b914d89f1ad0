"""Family ``onepfrac``: ``settings`` (section ``bank.onepfrac``, no torch) and ``generator`` (the published
generator's port and the one-fractal bank; each category's points are replayed per image by
:class:`dr_fdsl.families.onepfrac.instances.OnePFracReplay`)."""
