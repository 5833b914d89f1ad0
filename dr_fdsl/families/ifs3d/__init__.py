"""Family ``ifs3d``: ``settings`` (section ``bank.ifs3d``, no torch), ``generator``."""
