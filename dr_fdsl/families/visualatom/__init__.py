"""Family ``visualatom``: ``settings`` (section ``bank.visualatom``, no torch), ``generator``, ``published`` (the
port of the published code), ``perlin``."""
