"""Evaluators shared by the in-loop monitor (train.py) and the evaluate entrypoint."""
