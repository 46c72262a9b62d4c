"""Logged interaction data: collection from an env, parquet storage, and exports to other tools."""

from recsim_ft.data.collect import Policy, collect
from recsim_ft.data.export import to_bandit_table, to_obp, to_replay_buffer, user_observations
from recsim_ft.data.log import InteractionLog, SlateColumns

__all__ = [
    "InteractionLog",
    "Policy",
    "SlateColumns",
    "collect",
    "to_bandit_table",
    "to_obp",
    "to_replay_buffer",
    "user_observations",
]
