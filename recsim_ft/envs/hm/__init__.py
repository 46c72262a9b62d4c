"""The H&M Personalized Fashion Recommendations env (``HMFashion-v0``) and its data, one module
each: ``env`` (the env), ``data`` (the Kaggle files: reading, checking, processing,
transactions), ``synthetic`` (the stand-in calibrated to the full data's statistics),
``trips`` (the stand-in's weeks as the real data's: shopping trips, baskets, activity,
repurchase), ``ceiling`` (the competition week's best ranking there), ``measures`` (what a
stretch of purchases looks like, to compare the stand-in with the data)."""

from recsim_ft.envs.hm.env import HMFashionEnv

__all__ = ["HMFashionEnv"]
