"""The H&M Personalized Fashion Recommendations competition's own protocol, on the Kaggle files
or the synthetic stand-in: for every customer, 12 articles they will buy in the week after the
data used, out of the whole catalogue, scored by MAP@12 over the customers who bought that week.

The paper's H&M figure is MAP@12 over 100 articles for 100 users, which says nothing about the
leaderboard (random ranking of 100 articles already scores about 0.03). Here the protocol is
the competition's, with the local validation its top teams used: the target is a week of the
data (by default the last), the strategies see only the transactions before it, and
:func:`map_at_k` scores as Kaggle does (the normaliser is min(m, 12), m the customer's distinct
articles that week; repeats of an article in a prediction count once). Several target weeks
(``weeks``) give a spread. The strategies are the public notebooks' baselines:

- ``best_sellers``: last week's best sellers, the same 12 for everyone (the "trending products
  weekly" notebooks, about 0.0225 public on the real data);
- ``decayed_popularity``: every purchase weighted by ``0.5 ** (age in days / half_life)``;
- ``buy_again``: the customer's own articles of the last ``days`` days, most recent first,
  filled with last week's best sellers.

A learned model enters the table through :func:`scorer_strategy` (any scorer of customers x
articles) or :func:`agent_strategy` (any fitted agent of ``recsim_ft.agents``);
:func:`two_tower_strategy` is FT-Mamba, FT-Transformer or an MLP as the two towers, trained on
the transactions before the target week with no env (``recsim-ft hm-competition --strategies
two_tower``); :class:`TwoStage` re-ranks the candidates of every source
(:mod:`recsim_ft.competition.candidates`) with LightGBM's LambdaRank (``--strategies
two_stage``).

The package: ``protocol`` (the target week, the split, the metric), ``strategies`` (the rules
and the adapters of learned models), ``two_tower`` (the two-tower model's training on the
transactions and its ranking of the whole catalogue), ``candidates`` (the sources and their
recall), ``ranker`` (the two-stage strategy), ``report`` (several weeks, the table),
``submission`` (Kaggle's submission file from any strategy).
"""

from recsim_ft.competition.protocol import WEEK, K, WeekSplit, map_at_k, split_week
from recsim_ft.competition.ranker import TwoStage
from recsim_ft.competition.report import evaluate_weeks, markdown
from recsim_ft.competition.strategies import (
    STRATEGIES,
    Scorer,
    Strategy,
    agent_strategy,
    best_sellers,
    buy_again,
    decayed_popularity,
    scorer_strategy,
)
from recsim_ft.competition.submission import submission_frame, write_submission
from recsim_ft.competition.two_tower import (
    competition_config,
    fit_two_tower,
    rank_articles,
    transactions_log,
    two_tower_strategy,
)

__all__ = [
    "K",
    "STRATEGIES",
    "WEEK",
    "Scorer",
    "Strategy",
    "TwoStage",
    "WeekSplit",
    "agent_strategy",
    "best_sellers",
    "buy_again",
    "competition_config",
    "decayed_popularity",
    "evaluate_weeks",
    "fit_two_tower",
    "map_at_k",
    "markdown",
    "rank_articles",
    "scorer_strategy",
    "split_week",
    "transactions_log",
    "submission_frame",
    "two_tower_strategy",
    "write_submission",
]
