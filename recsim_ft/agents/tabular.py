"""Strong baselines that learn from the log's feature rows: any scikit-learn model, a gradient
boosted tree, per-item linear models and popularity within user segments.

They answer the question a reader of any results table asks first: does the two-tower model beat
what a default tabular model gets from the same log in seconds? Each is an ``Agent`` in the
scikit-learn style (the constructor only stores its arguments, ``fit(log)`` returns ``self`` and
sets attributes ending in ``_``).

>>> import gymnasium as gym
>>> from recsim_ft.data import collect
>>> from recsim_ft.evaluate import evaluate
>>> env = gym.make("VaccineMessaging-v0", clusters=25, messages=25)
>>> log = collect(env, n=20_000, seed=0)
>>> gbdt = GBDTAgent(env, max_iter=50).fit(log)
>>> popularity = PopularityAgent(env).fit(log)
>>> evaluate(gbdt, env, seed=0)["HR@1"] > evaluate(popularity, env, seed=0)["HR@1"]
True

All of them take any log of their env (slate logs included: each shown item is one row, with
the reward of the chosen item and 0 for the others) and score plain and session observations
(the user's features; a session's history is not used). In slate mode ``recommend(observation,
k=slate_size)`` is the slate, as for every agent.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
import sklearn
from scipy import sparse
from sklearn.base import clone, is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.metrics import mutual_info_score
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, TargetEncoder
from sklearn.utils.fixes import parse_version

from recsim_ft.agents.bandits import user_context
from recsim_ft.agents.base import Agent
from recsim_ft.agents.baselines import PopularityAgent, reward_values
from recsim_ft.checks import check_bool, check_choice, check_float, check_int
from recsim_ft.schema import Batch

#: Default bound on the (user, item) rows scored at once (see ``SklearnAgent``).
CHUNK_ROWS = 1 << 18


def check_log(agent: Agent, log: Any, allow_env_mismatch: bool = False) -> np.ndarray:
    """Refuse a log the agent cannot learn from (another env or env setting, no rows, a single
    reward value), naming what is wrong; returns the log's rewards as float64."""
    name = type(agent).__name__
    if not hasattr(log, "check_env"):
        raise TypeError(f"{name}.fit expects an InteractionLog, got {type(log).__name__}")
    log.check_env(agent.env, allow_env_mismatch)
    if len(log) == 0:
        raise ValueError(f"cannot fit {name} on an empty log")
    rewards = np.asarray(log.rewards, dtype=np.float64)
    values = np.unique(rewards)
    if len(values) == 1:
        raise ValueError(
            f"cannot fit {name}: every logged reward is {values[0]:g}, so the log says nothing "
            "about which items users prefer"
        )
    return rewards


class SklearnAgent(Agent):
    """Any scikit-learn regressor or classifier as a recommender: it predicts the reward of a
    (user, item) pair from one row of features and ranks items by the prediction.

    Each row is the user's features, then the item's (``env.item_table()``), then the item index
    (``feature_names``; categorical features as their integer codes, marked in
    ``categorical_features`` for estimators that take such a mask). A regressor fits the logged
    rewards and scores by ``predict``; a classifier fits ``reward > 0`` (a like, a purchase, a
    vaccination; Spotify's -1 and 0 are both "not liked") and scores by ``predict_proba`` of the
    positive class. ``fit`` trains a clone of ``estimator`` (``estimator_``), so the agent never
    changes the object it was given.

    Memory: ``score_items`` builds the rows of every (user, item) pair in chunks of at most
    ``chunk_rows`` pairs, so beyond the (n_users, n_items) float64 scores it returns it holds
    ``chunk_rows x len(feature_names)`` float64 values (64 MiB for the default 2**18 rows and 32
    columns) plus what the estimator allocates for that many rows. The scores are the same for
    every ``chunk_rows``.

    Args:
        env: the environment whose items are ranked.
        estimator: an unfitted scikit-learn estimator (or pipeline) with ``fit`` and ``predict``
            (regressor) or ``predict_proba`` (classifier).
        chunk_rows: the most (user, item) rows predicted at once.
        allow_env_mismatch: fit on a log of another setting of the env (same features), as
            ``InteractionLog.check_env``.

    >>> import gymnasium as gym
    >>> from sklearn.linear_model import LogisticRegression
    >>> from recsim_ft.data import collect
    >>> env = gym.make("Spotify-v0")
    >>> agent = SklearnAgent(env, LogisticRegression()).fit(collect(env, n=2_000, seed=0))
    >>> agent.score_items(env.unwrapped.test_users(3, seed=0)).shape
    (3, 50)
    """

    def __init__(
        self,
        env: gym.Env,
        estimator: Any,
        chunk_rows: int = CHUNK_ROWS,
        allow_env_mismatch: bool = False,
    ) -> None:
        super().__init__(env)
        self.estimator = estimator
        self.chunk_rows = chunk_rows
        self.allow_env_mismatch = allow_env_mismatch

    @property
    def feature_names(self) -> list[str]:
        """The columns of a row: ``user:<name>`` for each user feature (numeric ones first, as
        in ``Batch``), ``item:<name>`` for each item feature, then ``item_index``."""
        env = self.rec_env
        names = []
        for prefix, schema in (("user", env.user_schema), ("item", env.item_schema)):
            names += [f"{prefix}:{f.name}" for f in schema.numeric + schema.categorical]
        return names + ["item_index"]

    @property
    def categorical_features(self) -> np.ndarray:
        """Boolean mask over ``feature_names``: the columns that hold category codes."""
        return self.category_counts > 0

    @property
    def category_counts(self) -> np.ndarray:
        """Per column of ``feature_names``: its number of categories (0 for a numeric one)."""
        env = self.rec_env
        counts: list[int] = []
        for schema in (env.user_schema, env.item_schema):
            counts += [0] * schema.n_numeric + list(schema.cardinalities)
        return np.array(counts + [self.n_items], dtype=np.int64)

    def rows(self, users: Batch, items: np.ndarray) -> np.ndarray:
        """(n, len(feature_names)) float64 feature rows of the pairs (``users[i]``,
        ``items[i]``)."""
        table = self.rec_env.item_table()
        return np.hstack(
            [
                users.numeric,
                users.categorical,
                table.numeric[items],
                table.categorical[items],
                np.asarray(items)[:, None],
            ]
        ).astype(np.float64)

    def fit(self, log: Any) -> SklearnAgent:
        estimator = self._checked_estimator()
        check_int("chunk_rows", self.chunk_rows, low=1)
        rewards = check_log(self, log, self.allow_env_mismatch)
        classifier = is_classifier(estimator)
        target = (rewards > 0).astype(np.int64) if classifier else rewards
        if classifier and len(np.unique(target)) == 1:
            raise ValueError(
                f"cannot fit the classifier {type(estimator).__name__}: no logged reward is "
                f"{'above' if target[0] == 0 else 'at or below'} 0, so there is one class only"
            )
        self.estimator_ = clone(estimator).fit(self.rows(log.users, log.actions), target)
        self.classifier_ = classifier
        return self

    def score_items(self, users: Batch) -> np.ndarray:
        if not hasattr(self, "estimator_"):
            raise RuntimeError(f"{type(self).__name__} is not fitted yet: call fit(log) first")
        self.check_users(users)  # a tree routes a missing value somewhere: refuse it instead
        n_items = self.n_items
        scores = np.empty(len(users) * n_items)
        for start in range(0, len(scores), self.chunk_rows):
            pairs = np.arange(start, min(start + self.chunk_rows, len(scores)))
            x = self.rows(users[pairs // n_items], pairs % n_items)
            if self.classifier_:
                positive = list(self.estimator_.classes_).index(1)
                scores[pairs] = self.estimator_.predict_proba(x)[:, positive]
            else:
                scores[pairs] = np.asarray(self.estimator_.predict(x), dtype=np.float64).ravel()
        return scores.reshape(len(users), n_items)

    def _checked_estimator(self) -> Any:
        estimator = self.estimator
        missing = [m for m in ("fit", "predict") if not callable(getattr(estimator, m, None))]
        if not missing and is_classifier(estimator) and not hasattr(estimator, "predict_proba"):
            missing = ["predict_proba"]
        if missing:
            raise TypeError(
                f"estimator {estimator!r} has no {' or '.join(missing)}: SklearnAgent takes a "
                "scikit-learn regressor (fit, predict) or classifier (fit, predict_proba)"
            )
        return estimator


class GBDTAgent(SklearnAgent):
    """The default strong baseline: scikit-learn's ``HistGradientBoostingRegressor`` on the
    rows of ``SklearnAgent``, fitted to the logged rewards.

    Categorical features are declared as such. Trees take at most ``max_bins`` (255) categories
    per feature, fewer than a large catalogue has items (20,000 H&M articles, say). Then every
    feature with more categories enters as its code (numeric) and as a cross-fitted target
    encoding (scikit-learn's ``TargetEncoder``: the category's mean reward shrunk towards the
    overall mean, computed out of fold while fitting, so a row never sees its own reward); and
    so does the item index crossed with each categorical user feature (the mean reward of the
    item among users of that category), so the trees still see which users like which item.

    Args:
        env: the environment whose items are ranked.
        seed: ``random_state`` of the trees' early-stopping split and of the target encoder's
            folds: the same seed and log give the same scores.
        chunk_rows, allow_env_mismatch: as ``SklearnAgent``.
        **params: any ``HistGradientBoostingRegressor`` parameter; the defaults are the
            library's, with ``max_iter=300``.
    """

    DEFAULTS: dict[str, Any] = {"max_iter": 300}

    def __init__(
        self,
        env: gym.Env,
        seed: int = 0,
        chunk_rows: int = CHUNK_ROWS,
        allow_env_mismatch: bool = False,
        **params: Any,
    ) -> None:
        Agent.__init__(self, env)
        self.seed = seed
        self.chunk_rows = chunk_rows
        self.allow_env_mismatch = allow_env_mismatch
        self.params = params

    @property
    def estimator(self) -> Any:  # type: ignore[override]
        """The pipeline ``fit`` clones: the target encodings (for a large catalogue), then the
        trees."""
        params = {**self.DEFAULTS, **self.params}
        check_int("seed", self.seed, low=0)
        counts = self.category_counts
        max_categories = params.get("max_bins", 255)
        large = np.flatnonzero(counts > max_categories)
        categorical = (counts > 0) & (counts <= max_categories)
        trees = HistGradientBoostingRegressor(**params, random_state=self.seed)
        if not len(large):
            return trees.set_params(categorical_features=categorical)
        user_categorical = self.rec_env.user_schema.n_numeric + np.arange(
            self.rec_env.user_schema.n_categorical
        )
        crossed = np.r_[user_categorical, len(counts) - 1]  # the user's categories, the item
        blocks = [("large", _target_encoder(self.seed), large)]
        if len(user_categorical):
            crossing = FunctionTransformer(
                _item_crossed_with, kw_args={"cardinalities": counts[crossed[:-1]]}
            )
            blocks.append(
                (
                    "item_by_user_category",
                    make_pipeline(crossing, _target_encoder(self.seed)),
                    crossed,
                )
            )
        blocks.append(("rest", "passthrough", np.arange(len(counts))))
        encodings = ColumnTransformer(blocks)
        n_encoded = len(large) + len(user_categorical)
        trees.set_params(categorical_features=np.r_[np.zeros(n_encoded, bool), categorical])
        return make_pipeline(encodings, trees)


def _item_crossed_with(columns: np.ndarray, cardinalities: np.ndarray) -> np.ndarray:
    """One code per (item, category of user feature ``j``) pair: ``columns`` holds the user's
    categorical codes, then the item index."""
    item = columns[:, -1:].astype(np.int64)
    return item * cardinalities + columns[:, :-1].astype(np.int64)


class LinearAgent(Agent):
    """Per-item ridge regression on the user's features: the classic (disjoint) contextual-bandit
    model, fitted offline in closed form.

    Item ``k`` predicts ``x @ theta_k + mean`` from the user context ``x`` of
    ``recsim_ft.agents.bandits.user_context`` (numeric features scaled by their bounds, one-hot
    categoricals, an intercept), with ``theta_k = (ridge I + X_k^T X_k)^-1 X_k^T (r_k - mean)``
    over the item's logged rows ``X_k`` and rewards ``r_k``: centring on the overall mean reward
    makes an item with few rows shrink towards the average item, not towards 0. Memory:
    ``n_items x d x d`` float64 for the fit (d: the context length), ``n_items x d`` after.

    Args:
        env: the environment whose items are ranked.
        ridge: the L2 penalty (> 0).
        allow_env_mismatch: as ``SklearnAgent``.

    >>> import gymnasium as gym
    >>> from recsim_ft.data import collect
    >>> env = gym.make("VaccineMessaging-v0", clusters=25, messages=25)
    >>> LinearAgent(env).fit(collect(env, n=5_000, seed=0)).theta_.shape  # (items, context)
    (25, 42)
    """

    def __init__(self, env: gym.Env, ridge: float = 1.0, allow_env_mismatch: bool = False) -> None:
        super().__init__(env)
        self.ridge = ridge
        self.allow_env_mismatch = allow_env_mismatch

    def context(self, users: Batch) -> np.ndarray:
        return user_context(users, self.rec_env.user_schema)

    def fit(self, log: Any) -> LinearAgent:
        ridge = check_float("ridge", self.ridge, low=0, low_open=True)
        rewards = check_log(self, log, self.allow_env_mismatch)
        x, actions = self.context(log.users), log.actions
        self.mean_reward_ = float(rewards.mean())
        d = x.shape[1]
        gram = np.empty((self.n_items, d, d))
        for i in range(d):  # one weighted count per entry: O(n d^2) time, no (n, d, d) array
            for j in range(i, d):
                gram[:, i, j] = gram[:, j, i] = np.bincount(
                    actions, weights=x[:, i] * x[:, j], minlength=self.n_items
                )
        gram += ridge * np.eye(d)
        moments = np.stack(
            [
                np.bincount(
                    actions, weights=x[:, i] * (rewards - self.mean_reward_), minlength=self.n_items
                )
                for i in range(d)
            ],
            axis=1,
        )
        self.theta_ = np.linalg.solve(gram, moments[..., None])[..., 0]
        return self

    def score_items(self, users: Batch) -> np.ndarray:
        if not hasattr(self, "theta_"):
            raise RuntimeError("LinearAgent is not fitted yet: call fit(log) first")
        return self.context(self.check_users(users)) @ self.theta_.T + self.mean_reward_


class SegmentPopularityAgent(Agent):
    """Popularity within the user's segment: users with the same (binned) features, backing off
    to coarser segments, then to the whole log, where a segment has few events.

    Numeric features are cut into ``n_bins`` quantile bins of the logged users; categorical
    features are their categories. The features are ordered by how much they say about which
    items are rewarded (mutual information between the feature and the rewarded item, on the
    log), unless ``features`` gives the order. Segment level ``j`` groups users by the first
    ``j`` features (level 0: everyone); an item's score at level ``j`` is its popularity there,
    shrunk towards level ``j - 1``::

        score_j = (positives_j + prior * score_{j-1}) / (events_j + prior)

    from ``score_-1``, the popularity of all items together, so an item or a segment with few
    events keeps the coarser estimate (a single lucky event does not put an item on top), and
    an unseen segment keeps it entirely. Popularity is the share of positive rewards
    (``by="positive_rate"``) or the mean reward (``"mean_reward"``), as ``PopularityAgent``; or
    (``"positive_share"``) the item's share of the segment's positive rewards, how often the
    segment bought it, with ``events_j`` the segment's positives (the same for every item) and
    ``score_-1`` the item's share of all positives: a smoothed estimate of ``p(item | segment)``,
    which over a large catalogue ranks far better than a rate over a few events per item.

    Args:
        env: the environment whose items are ranked.
        n_bins: quantile bins per numeric feature (>= 1).
        prior: the pseudo-count of the coarser level (> 0).
        max_depth: use the first ``max_depth`` features only (None: all).
        features: the user features in order, coarsest split first (None: by mutual
            information).
        by: ``"positive_rate"``, ``"mean_reward"`` or ``"positive_share"``.
        allow_env_mismatch: as ``SklearnAgent``.

    Memory: two sparse (segments x items) count matrices per level; scoring holds a few
    (users x items) arrays per chunk of users.

    >>> import gymnasium as gym
    >>> from recsim_ft.data import collect
    >>> env = gym.make("HMFashion-v0")
    >>> agent = SegmentPopularityAgent(env).fit(collect(env, n=5_000, seed=0))
    >>> agent.features_[0]  # the coarsest split: what says most about the articles bought
    'age'
    """

    def __init__(
        self,
        env: gym.Env,
        n_bins: int = 4,
        prior: float = 10.0,
        max_depth: int | None = None,
        features: list[str] | None = None,
        by: str = "positive_rate",
        allow_env_mismatch: bool = False,
    ) -> None:
        super().__init__(env)
        self.n_bins = n_bins
        self.prior = prior
        self.max_depth = max_depth
        self.features = features
        self.by = by
        self.allow_env_mismatch = allow_env_mismatch

    def codes(self, users: Batch) -> pd.DataFrame:
        """One integer column per user feature: its bin (numeric) or category."""
        schema = self.rec_env.user_schema
        columns = {
            f.name: np.searchsorted(self.bin_edges_[f.name], users.numeric[:, j], side="left")
            for j, f in enumerate(schema.numeric)
        }
        columns.update({f.name: users.categorical[:, j] for j, f in enumerate(schema.categorical)})
        return pd.DataFrame({f.name: columns[f.name] for f in schema.features})

    def fit(self, log: Any) -> SegmentPopularityAgent:
        check_int("n_bins", self.n_bins, low=1)
        check_float("prior", self.prior, low=0, low_open=True)
        check_int("max_depth", self.max_depth, low=0, allow_none=True)
        check_choice("by", self.by, PopularityAgent.RULES)
        check_bool("allow_env_mismatch", self.allow_env_mismatch)
        rewards = check_log(self, log, self.allow_env_mismatch)
        schema = self.rec_env.user_schema
        quantiles = np.linspace(0, 1, self.n_bins + 1)[1:-1]
        self.bin_edges_ = {
            f.name: np.unique(np.quantile(log.users.numeric[:, j], quantiles))
            for j, f in enumerate(schema.numeric)
        }
        codes = self.codes(log.users)
        values = reward_values(rewards, self.by)
        self.features_ = self._ordered_features(codes, log.actions, rewards)
        item_events = np.bincount(log.actions, minlength=self.n_items)
        item_positives = np.bincount(log.actions, weights=values, minlength=self.n_items)
        if self.by == "positive_share":
            self.item_popularity_ = item_positives / max(values.sum(), 1.0)
        else:
            self.item_popularity_ = (item_positives + self.prior * values.mean()) / (
                item_events + self.prior
            )
        self.levels_ = []
        for depth in range(1, len(self.features_) + 1):
            keys = codes[self.features_[:depth]]
            segments, rows = _segment_index(keys)
            shape = (len(segments), self.n_items)
            events = sparse.csr_matrix((np.ones(len(rows)), (rows, log.actions)), shape=shape)
            positives = sparse.csr_matrix((values, (rows, log.actions)), shape=shape)
            self.levels_.append((segments, events, positives))
        return self

    def score_items(self, users: Batch) -> np.ndarray:
        if not hasattr(self, "levels_"):
            raise RuntimeError("SegmentPopularityAgent is not fitted yet: call fit(log) first")
        self.check_users(users)  # a missing value would fall into some bin: refuse it instead
        codes = self.codes(users)
        scores = np.tile(self.item_popularity_, (len(users), 1))
        for depth, (segments, events, positives) in enumerate(self.levels_, start=1):
            keys = codes[self.features_[:depth]]
            found = segments.get_indexer(pd.MultiIndex.from_frame(keys))
            rows = np.flatnonzero(found >= 0)
            p = positives[found[rows]].toarray()
            if self.by == "positive_share":  # events: the segment's positives, for every item
                n = p.sum(axis=1, keepdims=True)
            else:
                n = events[found[rows]].toarray()
            scores[rows] = (p + self.prior * scores[rows]) / (n + self.prior)
        return scores

    def _ordered_features(
        self, codes: pd.DataFrame, actions: np.ndarray, rewards: np.ndarray
    ) -> list[str]:
        names = list(codes.columns)
        if self.features is not None:
            unknown = [f for f in self.features if f not in names]
            if unknown or len(set(self.features)) != len(self.features):
                raise ValueError(
                    f"features must be distinct user features of {names}, got {self.features}"
                )
            order = list(self.features)
        else:
            liked = rewards > 0 if (rewards > 0).any() else rewards >= np.median(rewards)
            information = {n: mutual_info_score(codes[n][liked], actions[liked]) for n in names}
            order = sorted(names, key=lambda n: -information[n])
        return order[: self.max_depth]


def _target_encoder(seed: int) -> TargetEncoder:
    """A ``TargetEncoder`` whose cross-fitting folds are shuffled with ``seed`` (scikit-learn 1.9
    takes the folds as ``cv``, earlier releases as ``random_state``)."""
    if parse_version(sklearn.__version__) >= parse_version("1.9"):
        return TargetEncoder(cv=KFold(5, shuffle=True, random_state=seed))
    return TargetEncoder(shuffle=True, random_state=seed)


def _segment_index(keys: pd.DataFrame) -> tuple[pd.MultiIndex, np.ndarray]:
    """The distinct rows of ``keys`` (the segments) and the segment of each row."""
    rows, segments = pd.MultiIndex.from_frame(keys).factorize()
    return segments, rows
