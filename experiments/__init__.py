"""Runnable experiments: `python -m experiments.NAME --workdir DIR [--config.field=value]`.

Each module defines get_config() (every field documented) and calls `common.main`.
"""
