"""Native vector environments: one env object steps ``num_envs`` users with numpy.

``gym.make_vec("Spotify-v0", num_envs=N)`` returns a ``RecVectorEnv`` (Gymnasium uses a registered
``vector_entry_point`` by default; ``vectorization_mode="sync"`` still gives the generic
``SyncVectorEnv`` of N separate env copies, and is needed for ``make_vec(..., wrappers=...)``,
which Gymnasium refuses for a vector entry point). Every step is one call of the env's
vectorized ``respond`` on all N users at once (``expected_reward`` and ``sample_reward``; in
session mode the session methods) instead of N Python-level ``step`` calls, through the same
``recsim_ft.envs.episodes`` code as the single env, and the N slots share one env object, so an
env that is costly to build (H&M, vaccine with its k-means) is built once. Slates and sessions
(the env kwargs ``slate_size`` and ``session``) work as in the single env.
``benchmarks/vector_env.py`` measures the speed-up.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from recsim_ft.checks import check_actions, check_int, check_slates
from recsim_ft.envs.base import RecEnv
from recsim_ft.envs.episodes import Episodes

_MODES = (AutoresetMode.NEXT_STEP, AutoresetMode.SAME_STEP)


class RecVectorEnv(VectorEnv):
    """``num_envs`` independent episodes of one recsim-ft env, stepped together.

    ## Description
    Slot ``i`` is a user and its episode, exactly as in the single env: ``reset`` draws a user,
    each ``step`` recommends ``actions[i]`` to slot ``i``'s user, and the episode terminates after
    the env's ``horizon`` steps (1 by default: every episode is one recommendation). In session
    mode (``session=True``) slot ``i``'s user keeps their session state between steps, the
    episode terminates when they leave and is truncated after ``session_length`` steps.

    ## Spaces
    ``single_observation_space`` / ``single_action_space`` are the env's own; ``observation_space``
    is their batch (``Dict(numeric=Box((N, d)), categorical=MultiDiscrete((N, c)))``) and
    ``action_space`` is ``MultiDiscrete([n_items] * N)`` (with ``slate_size=k``: an (N, k)
    ``MultiDiscrete``, one slate per row), as ``SyncVectorEnv`` builds them.

    ## Step and autoreset
    ``autoreset_mode=AutoresetMode.NEXT_STEP`` (default, Gymnasium >= 1.0's default): the step
    that ends an episode returns the *finished* user's observation with ``terminated=True``; the
    next step of that slot ignores its action, draws a new user and returns their observation with
    reward 0 and ``terminated = truncated = False``. With horizon 1 every other step is such a
    reset step. ``AutoresetMode.SAME_STEP``: the ending step already returns the new user's
    observation; the finished user's observation and info are in ``infos["final_obs"]`` (an object
    array) and ``infos["final_info"]``. A truncated session is reset the same way as a
    terminated one; outside session mode ``truncated`` is always False.

    ## Infos
    As ``SyncVectorEnv`` stacks the single env's infos: ``infos["user_id"]`` (int64, every slot)
    and ``infos["expected_reward"]`` (float64, the expected reward of the recommended item or
    slate; only slots that stepped, marked by the boolean mask ``infos["_expected_reward"]``; the
    key is absent when no slot stepped, e.g. on the all-slots reset step of horizon 1); with
    slates also ``chosen_position`` and ``chosen_item`` (int64, -1: nothing chosen), like
    ``expected_reward``. ``session_outlook()`` gives oracles and planners the hidden-state view
    of every slot.

    ## Seeding
    ``reset(seed=s)`` seeds one generator for all slots (``self.np_random``); every user and reward
    draw comes from it, so the same seed gives the same batch of episodes. The draws are not
    those of a ``SyncVectorEnv`` reset with the same seed (which seeds slot ``i`` with ``s + i``).

    ## Arguments
    ```python
    gym.make_vec("Spotify-v0", num_envs=64)                                   # this class
    gym.make_vec("VaccineMessaging-v0", num_envs=64, clusters=50, messages=100)  # env kwargs
    RecVectorEnv(gym.make("Spotify-v0"), num_envs=64)                          # wrap an env object
    RecVectorEnv("Spotify-v0", num_envs=64, autoreset_mode=AutoresetMode.SAME_STEP)
    ```
    - ``env``: an env id (built with ``gym.make(env, **env_kwargs)``) or an env whose ``unwrapped``
      is a ``RecEnv``; ``None`` means the class's ``env_id`` (the registered subclasses).
    - ``num_envs``: number of slots N >= 1.
    - ``autoreset_mode``: ``AutoresetMode.NEXT_STEP`` or ``AutoresetMode.SAME_STEP`` (or their
      string values).

    >>> import recsim_ft
    >>> envs = gym.make_vec("Spotify-v0", num_envs=3)
    >>> type(envs).__name__, envs.action_space
    ('SpotifyVectorEnv', MultiDiscrete([50 50 50]))
    >>> observations, infos = envs.reset(seed=0)
    >>> observations["numeric"].shape
    (3, 20)
    >>> observations, rewards, terminated, truncated, infos = envs.step(np.array([0, 1, 2]))
    >>> terminated.tolist(), sorted(infos)
    ([True, True, True], ['_expected_reward', '_user_id', 'expected_reward', 'user_id'])
    """

    #: The env id the subclasses registered as ``vector_entry_point`` build.
    env_id: str | None = None

    def __init__(
        self,
        env: str | gym.Env | None = None,
        num_envs: int = 1,
        *,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        **env_kwargs: Any,
    ) -> None:
        num_envs = check_int("num_envs", num_envs, low=1)
        try:
            mode = AutoresetMode(autoreset_mode)
        except ValueError:
            mode = None
        if mode not in _MODES:
            raise ValueError(
                f"autoreset_mode must be one of {[m.value for m in _MODES]}, got {autoreset_mode!r}"
            )
        env = self.env_id if env is None else env
        if env is None:
            raise ValueError("RecVectorEnv needs an env id or an env object")
        if isinstance(env, str):
            env = gym.make(env, **env_kwargs)
        elif env_kwargs:
            raise ValueError(
                f"env kwargs {sorted(env_kwargs)} only apply when env is an id, not an env object"
            )
        if not isinstance(env.unwrapped, RecEnv):
            raise TypeError(
                f"RecVectorEnv needs a recsim-ft env (a RecEnv), got {type(env.unwrapped).__name__}"
            )
        self.env: RecEnv = env.unwrapped
        self.num_envs = num_envs
        self.autoreset_mode = mode
        self.metadata = {**self.env.metadata, "autoreset_mode": mode}
        self.single_observation_space = self.env.observation_space
        self.single_action_space = self.env.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._episodes = Episodes(self.env, num_envs)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """New users for every slot, or only for ``options["reset_mask"]`` (bool (N,)) as in
        ``SyncVectorEnv``. ``seed`` (an int) reseeds the one generator of all slots."""
        if seed is not None:  # one seed for all slots
            self._np_random, self._np_random_seed = seeding.np_random(
                check_int("seed", seed, low=0)
            )
        mask = np.ones(self.num_envs, bool)
        if options is not None and "reset_mask" in options:
            mask = np.asarray(options["reset_mask"])
            if mask.dtype != np.bool_ or mask.shape != (self.num_envs,) or not mask.any():
                raise ValueError(
                    f"options['reset_mask'] must be a bool array of shape ({self.num_envs},) "
                    f"with at least one True, got {mask!r}"
                )
        if self._episodes.users is None and not mask.all():
            raise RuntimeError("the first reset must reset every slot (no reset_mask)")
        self._episodes.start(mask, self.np_random)
        return self._episodes.observations(), _stacked({"user_id": self._episodes.users.ids}, mask)

    def step(
        self, actions: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        episodes, env = self._episodes, self.env
        if episodes.users is None:
            raise RuntimeError("call reset() before step()")
        if env.slate_size is None:
            actions = check_actions(actions, env.n_items, self.num_envs)
        else:
            actions = check_slates(actions, env.n_items, (self.num_envs, env.slate_size))
        restarting = (
            episodes.ended.copy()
            if self.autoreset_mode == AutoresetMode.NEXT_STEP
            else np.zeros(self.num_envs, bool)
        )
        stepping = ~restarting
        result = episodes.step(actions, self.np_random, stepping)
        ended = result.terminated | result.truncated
        step_infos = {"expected_reward": result.expected}
        if result.positions is not None:
            step_infos |= {"chosen_position": result.positions, "chosen_item": result.consumed}
        infos: dict[str, Any] = {}
        if self.autoreset_mode == AutoresetMode.NEXT_STEP:
            if restarting.any():  # this step's reset slots
                episodes.start(restarting, self.np_random)
            reported = stepping
        elif ended.any():  # SAME_STEP: report the finished episodes, then start new ones
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(ended):
                final_obs[i] = episodes.observation(i)
            infos["final_obs"], infos["_final_obs"] = final_obs, ended.copy()
            infos["final_info"] = _stacked({"user_id": episodes.users.ids, **step_infos}, ended)
            infos["_final_info"] = ended.copy()
            episodes.start(ended, self.np_random)
            reported = stepping & ~ended
        else:
            reported = stepping
        infos |= _stacked({"user_id": episodes.users.ids}, np.ones(self.num_envs, bool))
        infos |= _stacked(step_infos, reported)
        return (
            episodes.observations(),
            result.rewards,
            result.terminated,
            result.truncated,
            infos,
        )

    def session_outlook(self) -> tuple[np.ndarray, np.ndarray]:
        """For oracles and planners, from every slot's hidden state (never observed): (N,
        n_items) expected reward of each item now, and probability that the episode goes on
        after it."""
        if self._episodes.users is None:
            raise RuntimeError("call reset() before session_outlook()")
        return self._episodes.outlook()

    def close_extras(self, **kwargs: Any) -> None:
        self.env.close()


def _stacked(values: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, np.ndarray]:
    """Infos as ``SyncVectorEnv`` stacks them: each value zeroed outside ``mask``, plus ``"_key"``;
    no key at all when no slot reports it."""
    infos = {}
    if not mask.any():
        return infos
    for key, value in values.items():
        infos[key] = np.where(mask, value, np.zeros_like(value))
        infos[f"_{key}"] = mask.copy()
    return infos


class SpotifyVectorEnv(RecVectorEnv):
    """``gym.make_vec("Spotify-v0", ...)``: see ``RecVectorEnv``."""

    env_id = "Spotify-v0"


class HMFashionVectorEnv(RecVectorEnv):
    """``gym.make_vec("HMFashion-v0", ...)``: see ``RecVectorEnv``."""

    env_id = "HMFashion-v0"


class VaccineMessagingVectorEnv(RecVectorEnv):
    """``gym.make_vec("VaccineMessaging-v0", ...)``: see ``RecVectorEnv``."""

    env_id = "VaccineMessaging-v0"
