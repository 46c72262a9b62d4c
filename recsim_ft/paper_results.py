"""The numbers the paper reports (Starnes & Webster, Tables I and II), as data.

Means over the paper's 100 seeds, transcribed from its Tables I and II. ``recsim-ft reproduce``
prints them beside ours. Keys: setting name (see ``recsim_ft.experiments.table_settings``)
-> embedder -> metric. ``P@1`` and ``MRR@1`` equal ``HR@1`` by definition (one recommendation:
precision, reciprocal rank and hit are the same 0/1 value), so they are filled in from it.

>>> paper_value("spotify", "mamba", "HR@1")
0.977
>>> paper_value("k25_m25", "transformer", "P@1")
0.2355
>>> paper_value("spotify", "oracle", "HR@1") is None
True
"""

from __future__ import annotations

#: The column order of Tables I and II.
METRICS = ("P@5", "P@10", "R@5", "R@10", "MRR@5", "MRR@10", "HR@1", "HR@5", "HR@10")


def _rows(**rows: tuple[float, ...]) -> dict[str, dict[str, float]]:
    """One setting's rows: embedder -> a tuple in ``METRICS`` order."""
    table = {}
    for embedder, values in rows.items():
        metrics = dict(zip(METRICS, values, strict=True))
        metrics["P@1"] = metrics["MRR@1"] = metrics["HR@1"]
        table[embedder] = metrics
    return table


#: Table I: Spotify music and H&M fashion (the H&M MAP@12 figures are from the text).
TABLE_1: dict[str, dict[str, dict[str, float]]] = {
    "spotify": _rows(
        mamba=(0.952, 0.906, 0.374, 0.671, 0.985, 0.985, 0.977, 0.996, 0.998),
        transformer=(0.803, 0.759, 0.303, 0.551, 0.882, 0.887, 0.841, 0.949, 0.983),
    ),
    "hm": _rows(
        mamba=(0.1566, 0.1283, 0.1207, 0.1979, 0.3335, 0.3569, 0.2155, 0.5567, 0.7326),
        transformer=(0.1584, 0.1279, 0.1223, 0.1974, 0.3416, 0.3646, 0.226, 0.5609, 0.7341),
    ),
}
TABLE_1["hm"]["mamba"]["MAP@12"] = 0.0342
TABLE_1["hm"]["transformer"]["MAP@12"] = 0.0335

#: Table II: vaccine messaging, one setting per (clusters, messages).
TABLE_2: dict[str, dict[str, dict[str, float]]] = {
    "k25_m25": _rows(
        mamba=(0.1794, 0.0977, 0.897, 0.977, 0.6738, 0.6848, 0.5351, 0.897, 0.977),
        transformer=(0.1362, 0.0912, 0.681, 0.9119, 0.3925, 0.4236, 0.2355, 0.681, 0.9119),
    ),
    "k25_m50": _rows(
        mamba=(0.2597, 0.1718, 0.6269, 0.8219, 0.4823, 0.5033, 0.3719, 0.6939, 0.8498),
        transformer=(0.1733, 0.1366, 0.4212, 0.6558, 0.3167, 0.3448, 0.2159, 0.5129, 0.7241),
    ),
    "k25_m100": _rows(
        mamba=(0.2592, 0.22, 0.2939, 0.4822, 0.3779, 0.3985, 0.2945, 0.5296, 0.6856),
        transformer=(0.1536, 0.14, 0.1896, 0.3286, 0.2519, 0.2733, 0.1725, 0.4042, 0.5664),
    ),
    "k50_m50": _rows(
        mamba=(0.1046, 0.0729, 0.523, 0.7288, 0.2986, 0.3262, 0.1801, 0.523, 0.7288),
        transformer=(0.0508, 0.0463, 0.254, 0.4629, 0.121, 0.1481, 0.0568, 0.254, 0.4629),
    ),
    "k50_m100": _rows(
        mamba=(0.0884, 0.076, 0.1843, 0.3187, 0.1705, 0.189, 0.1106, 0.2863, 0.4272),
        transformer=(0.0498, 0.0471, 0.1187, 0.2275, 0.0997, 0.1179, 0.0512, 0.1957, 0.3354),
    ),
    "k100_m100": _rows(
        mamba=(0.0256, 0.0224, 0.1281, 0.2245, 0.0638, 0.0763, 0.0323, 0.1281, 0.2245),
        transformer=(0.0176, 0.016, 0.0878, 0.1595, 0.0425, 0.0517, 0.0204, 0.0878, 0.1595),
    ),
}

TABLES = {1: TABLE_1, 2: TABLE_2}


def paper_value(setting: str, agent: str, metric: str) -> float | None:
    """The paper's mean for one cell, or None where the paper reports none (e.g. baselines)."""
    for table in TABLES.values():
        if setting in table:
            return table[setting].get(agent, {}).get(metric)
    return None
