"""Family ``fractaldb``: ``settings`` (section ``bank.fractaldb``, no torch), ``generator``, ``published`` (the port
of the published code)."""
