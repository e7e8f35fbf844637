"""ml_collections configs: ``--config configs/NAME.py[:ARG]`` with ``--config.a.b=v`` overrides."""
