"""Logged interaction data: collection from an env, and parquet storage."""

from recsim_ft.data.collect import Policy, collect
from recsim_ft.data.log import InteractionLog

__all__ = ["InteractionLog", "Policy", "collect"]
