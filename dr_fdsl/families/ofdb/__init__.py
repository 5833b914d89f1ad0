"""Family ``ofdb``: ``settings`` (section ``bank.ofdb``, no torch), ``generator``, ``published`` (the port of the
published code), ``params_io`` (published parameter files)."""
