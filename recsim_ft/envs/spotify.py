"""Spotify-v0: real Spotify audio features, a genre-based user model and the Top-50 playlist."""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from recsim_ft.checks import check_actions, check_choice, check_float, check_int
from recsim_ft.envs.base import RecEnv
from recsim_ft.schema import Batch, Feature, Schema

ITEM_FEATURE_OPTIONS = ("rank", "audio", "both")


@lru_cache(maxsize=1)
def load_spotify_asset() -> dict[str, Any]:
    """The packaged asset (built by ``scripts/build_spotify_asset.py``), matrices as float64
    arrays."""
    text = (
        resources.files("recsim_ft").joinpath("assets", "spotify.json").read_text(encoding="utf-8")
    )
    asset = json.loads(text)
    asset["genre_matrix"] = np.asarray(asset["genre_matrix"], dtype=np.float64)
    asset["top50_matrix"] = np.asarray(asset["top50_matrix"], dtype=np.float64)
    for matrix in ("genre_matrix", "top50_matrix"):
        asset[matrix].setflags(write=False)
    return asset


class SpotifyEnv(RecEnv):
    """Recommend one of the 50 songs of Spotify's "Top 50 - Global" playlist to a listener who
    likes a few music genres.

    ## Description

    The Spotify experiment of Starnes & Webster ("Mamba for Scalable and Efficient Personalized
    Recommendations"), built on the data and user model of Dereventsov, Starnes & Webster (2022,
    "Analyzing Policy Entropy of Reinforcement Learning Agents for Personalization Tasks").
    Every genre ``g`` of 20 (acoustic ... soul) has a profile ``G[g]``: the mean of ten Spotify
    audio features (acousticness, danceability, energy, instrumentalness, liveness, loudness,
    mode, speechiness, tempo, valence; scaled to about [0, 1]) over the tracks of a Spotify
    genre playlist. Every song ``i`` of the Top-50 playlist has its own ten features ``S[i]``.
    Centring both matrices on their column means gives the genre-song affinity

        R = (G - mean_rows(G)) @ (S - mean_rows(S)).T        (20 x 50)

    A user is the set of genres they like, ``u`` (binary, 20). Their preference for song ``i`` is
    ``p_i = u @ R[:, i]``; they like it (label +1) when ``p_i > threshold``, dislike it (-1) when
    ``p_i < -threshold``, and are indifferent (0) otherwise. With the defaults, over random users,
    labels are about 29% -1, 42% 0 and 28% +1, a user likes 14.2 songs on average and 3.4% of
    users like none.

    Each episode is one user (a contextual bandit): ``reset()`` draws a user, ``step(action)``
    plays song ``action`` to them and returns its label. Two opt-in modes (kwargs of this id,
    see ``RecEnv``): ``slate_size=k`` shows k songs and the listener picks at most one;
    ``session=True`` keeps the listener for a session in which they tire of repeats and leave
    when bored or unhappy (see Sessions).

    ## Action Space

    ``Discrete(50)``: the index of the song in the playlist (0 = the playlist's first song).
    With ``slate_size=k``: ``MultiDiscrete([50] * k)``, a slate of k songs.

    ## Observation Space

    ``Dict({"numeric": Box(0, 1, (20,), float32)})``: the user's genre indicators, one feature per
    genre, named after it, in alphabetical genre order (``env.genres``). The observation does
    not change within an episode. With ``session=True`` it adds the recent history and the step
    count (``env.observation_schema``): ``numeric`` = genres, the rewards of the last
    ``history_length`` songs played, ``step``; ``categorical`` = those songs (51 categories,
    the last one ``"none"``).

    Item features (``env.item_table()``, for recommenders), chosen by ``item_features``:
    ``"rank"`` (default, as in the paper): one categorical feature ``rank`` with 50 categories,
    the playlist position, labelled ``"title - artist"``; ``"audio"``: the ten audio features as
    numeric features; ``"both"``: the rank and the audio features.

    ## Rewards

    The label of the song for this user: +1, 0 or -1 (``reward_bounds = (-1, 1)``). The reward is
    deterministic given user and song, so ``expected_reward`` is the label itself. In evaluation
    the relevant songs of a user are those labelled +1. With slates the listener plays song
    ``s_j`` with probability ``exp(tau q_j) / (exp(tau q_0) + sum_l exp(tau q_l))`` (``q`` the
    labels, ``tau = choice_scale``, ``q_0 = no_choice_utility``) or nothing, and the reward is
    the played song's label (0 for nothing).

    ## Sessions

    With ``session=True`` a listener hears one song per step (with slates: the one they pick)
    and has a hidden state: a boredom ``b_i >= 0`` per song and a satisfaction ``sigma``, both 0
    at the start. Songs that sound alike bore together: with ``a_i`` the song's audio features
    centred on the playlist mean, ``S_ij = max(0, cos(a_i, a_j)) ** kappa`` (``S_ii = 1``).
    When song ``c`` is played at step t (the parameters are ``dynamics`` keys, defaults in
    brackets)::

        enjoyment   e_i  = p_i - beta * b_i                      beta  = boredom_weight (0.1)
        reward      r    = label(e_c)  (+1 / 0 / -1 by threshold, as above)
        boredom     b'   = gamma * b + S[c]                      gamma = boredom_decay (0.8)
        satisfaction s'  = rho * sigma + (1 - rho) * r           rho   = satisfaction_memory (0.7)
        leaves with P    = sigmoid(theta_0 + theta_b * b_c - theta_s * s')
                           theta_0 = leave_bias (-4), theta_b = leave_boredom (1),
                           theta_s = leave_satisfaction (3), kappa = similarity_power (4)

    (``b_c`` is the boredom of the played song before it was played; when a slate is skipped,
    ``b' = gamma b``, ``r = 0`` and ``b_c = 0``.) So a liked song played again and again turns
    neutral, then disliked, and each repeat raises the chance that the listener quits, although
    the song still earns +1 for a while. The greedy one-step oracle (the best label now, ties to
    the lower index) keeps playing one song and loses the listener early; with random ties it
    does better, and a policy that weighs the chance of the listener staying, by rotating
    through dissimilar liked songs, does better still (``examples/session_rl.py`` measures all
    three).

    ## Starting State

    Number of liked genres ``floor(s * 20)`` with ``s ~ Uniform(genre_fraction)`` (default
    (0.05, 0.25), i.e. 1 to 4 genres, each about equally often), the genres drawn uniformly
    without replacement. All randomness comes from ``self.np_random`` (seeded by ``reset``).
    The user id in ``info["user_id"]`` and ``Batch.ids`` is the genre bit mask
    ``sum_g u_g * 2**g``, so users with the same genres share an id.

    ## Episode End

    ``terminated=True`` after ``horizon`` steps (default 1, one recommendation per user);
    never truncated. With ``session=True``: ``terminated`` when the listener leaves,
    ``truncated`` after ``session_length`` steps.

    ## Arguments

    ```python
    import gymnasium as gym
    import recsim_ft

    env = gym.make("Spotify-v0", threshold=0.1, genre_fraction=(0.05, 0.25),
                   item_features="rank", horizon=1)
    ```

    - ``threshold`` (float >= 0): the indifference band ``[-threshold, threshold]`` of ``p``.
    - ``genre_fraction`` ((low, high), 0 <= low <= high <= 1): range of the share ``s`` of the
      20 genres a user likes (``floor(s * 20)`` genres; ``low = high = 1`` means all 20).
    - ``item_features``: ``"rank"``, ``"audio"`` or ``"both"`` (see Observation Space).
    - ``horizon`` (int >= 1): recommendations per user before the episode terminates.
    - ``slate_size``, ``choice_scale``, ``no_choice_utility``, ``session``, ``session_length``,
      ``history_length``, ``dynamics``: the slate and session modes (``RecEnv``), e.g.
      ``gym.make("Spotify-v0", session=True, slate_size=3, dynamics={"boredom_decay": 0.9})``.

    ## Data and provenance

    ``recsim_ft/assets/spotify.json`` holds G, S, genre and feature names and the Top-50 track
    ids, titles and artists, derived by ``scripts/build_spotify_asset.py`` from the public
    repository ``sukiboo/policy_entropy`` (``environments/spotify/``, MIT licence, copyright (c)
    2022 Anton Dereventsov, see ``assets/spotify_LICENSE.txt`` and
    ``assets/spotify_PROVENANCE.md``). G is recomputed from the genre playlists and equals the
    source's ``spotify_features.csv``.

    Our choices: the behaviour policy of the paper's training log draws songs uniformly at random
    (``sample_log``); the id of a user is its genre mask; songs are labelled by title and artist.

    ## Version History

    - v0: initial version; slate and session modes added as kwargs (the default env is
      unchanged, bit for bit).

    Examples:
        >>> env = SpotifyEnv()
        >>> env.n_items, env.user_schema.n_numeric, env.item_schema.cardinalities
        (50, 20, (50,))
        >>> users = env.sample_users(3, np.random.default_rng(0))
        >>> rewards = env.expected_reward(users)
        >>> rewards.shape, np.unique(rewards).tolist()
        ((3, 50), [-1.0, 0.0, 1.0])
    """

    reward_bounds = (-1.0, 1.0)
    session_parameters = {
        "boredom_weight": (0.1, 0.0, None),
        "boredom_decay": (0.8, 0.0, 1.0),
        "similarity_power": (4.0, 0.0, None),
        "satisfaction_memory": (0.7, 0.0, 1.0),
        "leave_bias": (-4.0, None, None),
        "leave_boredom": (1.0, 0.0, None),
        "leave_satisfaction": (3.0, 0.0, None),
    }

    def __init__(
        self,
        threshold: float = 0.1,
        genre_fraction: tuple[float, float] = (0.05, 0.25),
        item_features: str = "rank",
        horizon: int = 1,
        **modes: Any,
    ) -> None:
        self.threshold = check_float("threshold", threshold, low=0)
        try:
            low, high = (check_float("genre_fraction", x) for x in genre_fraction)
        except (TypeError, ValueError):
            raise ValueError(
                f"genre_fraction must be a pair (low, high) of numbers, got {genre_fraction!r}"
            ) from None
        if not 0.0 <= low <= high <= 1.0:
            raise ValueError(
                f"genre_fraction must satisfy 0 <= low <= high <= 1, got {genre_fraction!r}"
            )
        self.genre_fraction = (low, high)
        self.item_features = check_choice("item_features", item_features, ITEM_FEATURE_OPTIONS)

        asset = load_spotify_asset()
        self.genres: tuple[str, ...] = tuple(asset["genres"])
        self.audio_features: tuple[str, ...] = tuple(asset["audio_features"])
        self.track_ids: tuple[str, ...] = tuple(asset["track_ids"])
        self.titles: tuple[str, ...] = tuple(asset["titles"])
        self.artists: tuple[str, ...] = tuple(asset["artists"])
        genre_matrix, top50_matrix = asset["genre_matrix"], asset["top50_matrix"]
        #: R, (n_genres, n_items): a user's preference for each song is ``u @ affinity``
        self.affinity = (genre_matrix - genre_matrix.mean(axis=0)) @ (
            top50_matrix - top50_matrix.mean(axis=0)
        ).T
        self._audio = top50_matrix.astype(np.float32)

        self.n_items = len(self.track_ids)
        self.user_schema = Schema(
            tuple(Feature(g, "numeric", low=0.0, high=1.0) for g in self.genres)
        )
        rank = Feature(
            "rank",
            "categorical",
            tuple(f"{t} - {a}" for t, a in zip(self.titles, self.artists, strict=True)),
        )
        audio = tuple(
            Feature(name, "numeric", low=float(column.min()), high=float(column.max()))
            for name, column in zip(self.audio_features, top50_matrix.T, strict=True)
        )
        self.item_schema = Schema(
            {"rank": (rank,), "audio": audio, "both": (rank, *audio)}[item_features]
        )
        self._init_spaces(horizon, **modes)
        centred = top50_matrix - top50_matrix.mean(axis=0)
        unit = centred / np.linalg.norm(centred, axis=1, keepdims=True)
        #: S, (n_items, n_items): how much playing song c bores the listener of each song
        self.song_similarity = np.clip(unit @ unit.T, 0.0, 1.0) ** self.dynamics["similarity_power"]
        np.fill_diagonal(self.song_similarity, 1.0)

    # -- vectorized API -------------------------------------------------------------------------
    def sample_users(self, n: int, rng: np.random.Generator) -> Batch:
        n = check_int("n", n, low=0)
        n_genres = len(self.genres)
        n_liked = np.floor(rng.uniform(*self.genre_fraction, size=n) * n_genres).astype(np.int64)
        # a random permutation per user; its first n_liked genres are the liked ones
        order = np.argsort(rng.random((n, n_genres)), axis=1)
        liked = np.zeros((n, n_genres), dtype=bool)
        liked[np.arange(n)[:, None], order] = np.arange(n_genres) < n_liked[:, None]
        ids = liked @ (np.int64(1) << np.arange(n_genres, dtype=np.int64))
        return Batch(liked.astype(np.float32), np.zeros((n, 0), np.int64), ids)

    def item_table(self) -> Batch:
        ranks = np.arange(self.n_items, dtype=np.int64)
        numeric = (
            self._audio.copy()
            if self.item_features != "rank"
            else np.zeros((self.n_items, 0), np.float32)
        )
        categorical = (
            ranks[:, None]
            if self.item_features != "audio"
            else np.zeros((self.n_items, 0), np.int64)
        )
        return Batch(numeric, categorical, ranks)

    def expected_reward(self, users: Batch) -> np.ndarray:
        self.user_schema.validate(users, "users")
        return self._label(users.numeric.astype(np.float64) @ self.affinity)

    def sample_reward(
        self, users: Batch, items: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        """The label itself: the rule is deterministic, so ``rng`` is not used."""
        self.user_schema.validate(users, "users")
        items = check_actions(items, self.n_items, len(users))
        preference = np.einsum(
            "ng,gn->n", users.numeric.astype(np.float64), self.affinity[:, items]
        )
        return self._label(preference).astype(np.float32)

    def relevant(self, users: Batch) -> np.ndarray:
        return self.expected_reward(users) > 0

    # -- sessions (see the class docstring) -------------------------------------------------------
    def session_start(self, users: Batch) -> dict[str, np.ndarray]:
        n = len(users)
        return {"boredom": np.zeros((n, self.n_items)), "satisfaction": np.zeros(n)}

    def _enjoyment(self, users: Batch, state: dict[str, np.ndarray]) -> np.ndarray:
        self.user_schema.validate(users, "users")
        preference = users.numeric.astype(np.float64) @ self.affinity
        return preference - self.dynamics["boredom_weight"] * state["boredom"]

    def session_expected_reward(self, users: Batch, state: dict[str, np.ndarray]) -> np.ndarray:
        return self._label(self._enjoyment(users, state))

    def session_sample_reward(
        self,
        users: Batch,
        state: dict[str, np.ndarray],
        items: np.ndarray,
        expected: np.ndarray,
        rng: np.random.Generator,
    ) -> np.ndarray:
        """The label of the enjoyment: deterministic, ``rng`` is not used."""
        return expected.astype(np.float32)

    def _leave_probability(
        self, satisfaction: np.ndarray, boredom_played: np.ndarray
    ) -> np.ndarray:
        d = self.dynamics
        logit = (
            d["leave_bias"]
            + d["leave_boredom"] * boredom_played
            - d["leave_satisfaction"] * satisfaction
        )
        return 1.0 / (1.0 + np.exp(-logit))

    def _satisfaction(self, satisfaction: np.ndarray, rewards: np.ndarray) -> np.ndarray:
        memory = self.dynamics["satisfaction_memory"]
        return memory * satisfaction + (1.0 - memory) * rewards

    def session_advance(
        self,
        users: Batch,
        state: dict[str, np.ndarray],
        items: np.ndarray,
        rewards: np.ndarray,
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        played = items >= 0
        rows = np.flatnonzero(played)
        boredom_played = np.zeros(len(items))
        boredom_played[rows] = state["boredom"][rows, items[rows]]
        boredom = self.dynamics["boredom_decay"] * state["boredom"]
        boredom[rows] += self.song_similarity[items[rows]]
        satisfaction = self._satisfaction(state["satisfaction"], rewards.astype(np.float64))
        leaving = self._leave_probability(satisfaction, boredom_played)
        return {"boredom": boredom, "satisfaction": satisfaction}, leaving

    def session_continue_probability(
        self, users: Batch, state: dict[str, np.ndarray]
    ) -> np.ndarray:
        labels = self.session_expected_reward(users, state)
        satisfaction = self._satisfaction(state["satisfaction"][:, None], labels)
        return 1.0 - self._leave_probability(satisfaction, state["boredom"])

    def _label(self, preference: np.ndarray) -> np.ndarray:
        """+1 above the indifference band, -1 below it, 0 inside (float64)."""
        return np.where(
            preference > self.threshold, 1.0, np.where(preference < -self.threshold, -1.0, 0.0)
        )
