"""Family ``svd2d``: ``settings`` (section ``bank.svd2d``, no torch), ``generator``, ``published`` (the port of the
published code)."""
