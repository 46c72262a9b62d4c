"""The competition week's ceiling on the stand-in with trips (issue 41): each customer's expected
purchases of every article in the target week under the generator's own model, given what it
drew before and besides (the customer's segment and taste, their trips in the week and what
each purchase of them is: an opening, a fresh purchase, a complement, another colour or a repeat,
and every article bought before the week), ranked. No strategy that sees only the transactions
can rank better in expectation than the one that knows this state, so its MAP@12 is the
ceiling of the table (up to the ranking by expected count rather than by MAP itself, and to
two approximations named below, each of a rare case).

Each purchase of the week is a mixture of a few distributions over the catalogue, all linear in
the customer's fresh distribution ``f`` (the week's purchase model: a top article by segment,
else a tail article by taste):

- an opening or fresh purchase: ``f``;
- a complement of the trip's opening ``x ~ f``: the outfit block of ``x``'s index group and the
  complement of its product group, or ``f`` where there is none that week;
- another colour of an opening ``x ~ f`` of this week: uniform over ``x``'s other colours on
  sale, or ``f``; of a known article (the last trip's opening, before the week): the same with
  ``x`` known;
- a repeat of a known purchase: that article. (Approximations: a repeat or a sibling whose
  source is a purchase of this week that is itself no opening counts as ``f``; a block or group
  with nothing on sale, where the generator falls back to any tail article, is left out.)
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from recsim_ft.checks import check_int
from recsim_ft.competition.strategies import Strategy
from recsim_ft.envs.hm.data import Transactions
from recsim_ft.envs.hm.synthetic import trips_model
from recsim_ft.envs.hm.trips import KINDS, _Trips
from recsim_ft.metrics import top_k

OPEN, FRESH, COMPLEMENT, SIBLING, REPEAT = range(len(KINDS))
#: customers ranked at a time (each a dense row over the catalogue, float32)
BATCH = 512
#: target weeks one replay of the generator covers (the command's default 3): the strategy is
#: called for the latest first, and the earlier ones reuse it
REPLAY_WEEKS = 3


def _week_rows(seed: int, n_customers: int, first: int, last: int, chunk: int) -> dict:
    """Every purchase of days [first, last] (generator days) of the stand-in of ``seed`` and
    ``n_customers`` customers, replayed chunk by chunk, with its latents; the customers are rows
    of customers.csv."""
    from recsim_ft.envs.hm.synthetic import _customers, _purchase_counts, _world

    world = _world(seed, products=True)
    model = trips_model(seed)
    names = (
        "customer",
        "article",
        "kind",
        "day",
        "source_article",
        "source_day",
        "taste",
        "segment",
    )
    parts: dict[str, list] = {name: [] for name in names}
    for k, start in enumerate(range(0, n_customers, chunk)):
        rng = np.random.default_rng([seed, 1, k])
        n = min(chunk, n_customers - start)
        _, segment = _customers(rng, world, n)
        counts = _purchase_counts(rng, world.calibration, n)
        latents: dict = {}
        customer, article, day = model.rows(
            np.random.default_rng([seed, 7, k]), counts, segment, latents
        )
        keep = (day >= first) & (day <= last)
        source = latents["source"][keep]
        known = source >= 0
        parts["customer"].append(start + customer[keep])
        parts["article"].append(article[keep])
        parts["kind"].append(latents["kind"][keep])
        parts["day"].append(day[keep])
        parts["source_article"].append(np.where(known, article[np.maximum(source, 0)], -1))
        parts["source_day"].append(np.where(known, day[np.maximum(source, 0)], -1))
        parts["taste"].append(np.diff(latents["taste"], axis=1, prepend=0.0))
        parts["segment"].append(segment)
    return {key: np.concatenate(values) for key, values in parts.items()}


class _WeekModel:
    """The distributions of one week, over the catalogue's article rows."""

    def __init__(self, model: _Trips, week: int):
        from recsim_ft.envs.hm.synthetic import DYNAMICS

        self.model, self.week = model, week
        n_articles = len(model.release_week)
        self.head_probability = float(model.head_probability[week])
        self.taste_share = DYNAMICS["taste_share"]
        # the head: one distribution per segment row
        n_head, n_weeks = model.n_head, model.n_weeks
        rows = len(model.head_flat) // (n_weeks * n_head)
        offset = np.arange(rows)[:, None] * n_weeks + week
        cdf = model.head_flat.reshape(rows, n_weeks, n_head)[:, week] - offset
        self.head = np.diff(cdf, axis=1, prepend=0.0)  # (segment rows, head)
        # the tail by index group, and over every group
        tail = _positions(model.tail, week)
        blocks = model.tail_blocks
        self.tail = np.zeros((len(blocks), n_articles))  # groups, then all
        for g in range(len(blocks) - 1):
            lo, hi = blocks[g], blocks[g + 1]
            self.tail[g, model.tail.order[lo:hi]] = _normalised(tail[lo:hi])
        self.tail[-1, model.tail.order] = _normalised(tail)
        # outfit blocks (index group, product group) and where each cell's complement is
        outfits = _positions(model.outfits, week)
        n_index, n_groups, _ = model.outfit_block.shape
        self.complement_row = np.full((n_index, n_groups), -1)
        complements = []
        for i in range(n_index):
            for g in range(n_groups):
                target = model.complement_group[g]
                if target < 0:
                    continue
                lo, hi = model.outfit_block[i, target]
                if hi > lo and outfits[lo:hi].sum() > 0:
                    distribution = np.zeros(n_articles)
                    distribution[model.outfits.order[lo:hi]] = _normalised(outfits[lo:hi])
                    self.complement_row[i, g] = len(complements)
                    complements.append(distribution)
        self.outfits = np.array(complements).reshape(len(complements), n_articles)
        self.cell = model.index_group * n_groups + model.product_group  # each article's cell
        self.n_cells = n_index * n_groups
        # other colours: on sale this week, and the share of an article's colours that are not
        on_sale = model.release_week <= week
        self.on_sale = on_sale
        others = np.maximum(model.product_size - 1, 1)
        unsold = (~on_sale).astype(float)
        unsold = np.bincount(model.product_start, unsold, n_articles)[model.product_start] - unsold
        self.sibling_fallback = np.where(model.product_size > 1, unsold / others, 1.0)

    def siblings(self, distribution: np.ndarray) -> np.ndarray:
        """(rows, m): the distribution of another colour of ``x ~ distribution`` over the first
        m articles, whose products lie within them (the head, or the catalogue); the mass that
        finds none on sale, and falls back to ``f``, is not included."""
        m = distribution.shape[1]
        _, product = np.unique(self.model.product_start[:m], return_inverse=True)
        total = np.zeros((len(distribution), product.max() + 1))
        np.add.at(total.T, product, distribution.T)
        size = self.model.product_size[:m]
        others = (total[:, product] - distribution) / np.maximum(size - 1, 1)
        return np.where((size > 1) & self.on_sale[:m], others, 0.0)


def _positions(sampler, week: int) -> np.ndarray:
    """Each position's probability in ``week`` (its share of the week's whole row)."""
    row = sampler.flat[week * sampler.n : (week + 1) * sampler.n] - week
    return np.diff(row, prepend=0.0)


def _normalised(weights: np.ndarray) -> np.ndarray:
    total = weights.sum()
    return weights / total if total > 0 else weights


def ceiling_strategy(seed: int, n_customers: int, chunk_customers: int = 100_000) -> Strategy:
    """A strategy that ranks by the generator's expected purchases of the target week (see the
    module docstring), for the stand-in with trips of ``seed`` and ``n_customers`` (its files
    as ``synthetic_files`` writes them: customers in generation order)."""
    from recsim_ft.envs.hm.synthetic import _span, _world

    seed = check_int("seed", seed, low=0)
    n_customers = check_int("n_customers", n_customers, low=1)
    model = trips_model(seed)
    world = _world(seed, products=True)
    article_ids = world.articles["article_id"].to_numpy()

    def ceiling(train: Transactions, customers: np.ndarray, k: int) -> np.ndarray:
        if train.n_customers != n_customers or not np.array_equal(train.article_ids, article_ids):
            raise ValueError(
                f"the ceiling ranks the stand-in with trips of seed {seed} and {n_customers:,} "
                f"customers; these transactions have {train.n_customers:,} customers and "
                + ("its" if np.array_equal(train.article_ids, article_ids) else "another")
                + " catalogue (another stand-in, seed or size, or real files)"
            )
        first_day, _ = _span(world.calibration)
        origin = int((first_day - np.datetime64("1970-01-01")).astype(int))
        start = int(train.days.max()) + 1 - origin  # the target week's first day
        week = int(model.week_of_day[start])
        if not replayed or not replayed["first"] <= start <= replayed["last"] - 6:
            first = max(0, start - 7 * (REPLAY_WEEKS - 1))
            rows = _week_rows(seed, n_customers, first, start + 6, chunk_customers)
            replayed.update(first=first, last=start + 6, rows=rows)
        replay = _in_days(replayed["rows"], start, start + 6)
        return _rank(model, _WeekModel(model, week), replay, start, customers, k)

    replayed: dict = {}
    return ceiling


def _in_days(replay: dict, first: int, last: int) -> dict:
    """The purchases of ``replay`` on days [first, last] (the customers' state unchanged)."""
    keep = (replay["day"] >= first) & (replay["day"] <= last)
    per_customer = ("taste", "segment")
    return {k: v if k in per_customer else v[keep] for k, v in replay.items()}


def expected_purchases(
    model: _Trips, week: _WeekModel, replay: dict, start: int, customers: np.ndarray
) -> Iterator[tuple[int, np.ndarray]]:
    """(first row, expected purchases) of successive batches of ``customers``: each customer's
    expected number of purchases of every article row in the week from generator day
    ``start`` (see the module docstring), float32."""
    n_customers = len(replay["segment"])
    row = np.full(n_customers, -1)
    row[customers] = np.arange(len(customers))
    at = row[replay["customer"]]
    mine = at >= 0
    who, kind = at[mine], replay["kind"][mine]
    known = (replay["source_day"][mine] >= 0) & (replay["source_day"][mine] < start)
    source = replay["source_article"][mine]
    n = len(customers)

    def count(mask: np.ndarray) -> np.ndarray:
        return np.bincount(who[mask], minlength=n).astype(float)

    fresh_rows = count((kind == OPEN) | (kind == FRESH) | (kind == REPEAT) & ~known)
    complements = count(kind == COMPLEMENT)
    unknown_siblings = count((kind == SIBLING) & ~known)
    known_sibling = (kind == SIBLING) & known
    known_repeat = (kind == REPEAT) & known

    segment_row = model.segment_row[replay["segment"][customers]]
    taste = replay["taste"][customers]
    h, ts = week.head_probability, week.taste_share
    # each customer's fresh distribution as weights on the head (per segment) and the tail rows
    tail_weights = np.hstack([(1 - h) * ts * taste, np.full((n, 1), (1 - h) * (1 - ts))])
    # aggregates of f: its mass in each cell, its siblings' fallback mass
    head_cells = _cell_mass(week, week.head, model.n_head)
    tail_cells = _cell_mass(week, week.tail, None)
    cells = h * head_cells[segment_row] + tail_weights @ tail_cells
    head_fallback = week.head @ week.sibling_fallback[: model.n_head]
    tail_fallback = week.tail @ week.sibling_fallback
    fallback = h * head_fallback[segment_row] + tail_weights @ tail_fallback
    complement_of = week.complement_row.ravel()
    with_complement = complement_of >= 0
    complement_mass = cells[:, with_complement].sum(axis=1)
    sibling_fallback_known = np.bincount(
        who[known_sibling], weights=week.sibling_fallback[source[known_sibling]], minlength=n
    )
    on_f = fresh_rows + complements * (1 - complement_mass) + unknown_siblings * fallback
    on_f += sibling_fallback_known
    outfit_weights = np.zeros((n, len(week.outfits)))
    for cell in np.flatnonzero(with_complement):
        outfit_weights[:, complement_of[cell]] += complements * cells[:, cell]
    tail_siblings = week.siblings(week.tail)
    head_siblings = week.siblings(week.head)
    bases = np.vstack([week.tail, tail_siblings, week.outfits]).astype(np.float32)
    coefficients = np.hstack(
        [on_f[:, None] * tail_weights, unknown_siblings[:, None] * tail_weights, outfit_weights]
    ).astype(np.float32)
    size = model.product_size
    for lo in range(0, n, BATCH):
        hi = min(n, lo + BATCH)
        expected = coefficients[lo:hi] @ bases
        rows = segment_row[lo:hi]
        expected[:, : model.n_head] += h * (
            on_f[lo:hi, None] * week.head[rows]
            + unknown_siblings[lo:hi, None] * head_siblings[rows]
        )
        for mask, spread in ((known_repeat, False), (known_sibling, True)):
            pick = mask & (who >= lo) & (who < hi)
            if not spread:
                np.add.at(expected, (who[pick] - lo, source[pick]), 1.0)
                continue
            for customer, x in zip(who[pick] - lo, source[pick], strict=True):
                start_x = model.product_start[x]
                members = model.product_members[start_x : start_x + size[x]]
                members = members[(members != x) & week.on_sale[members]]
                expected[customer, members] += 1.0 / max(size[x] - 1, 1)
        yield lo, expected


def _rank(
    model: _Trips, week: _WeekModel, replay: dict, start: int, customers: np.ndarray, k: int
) -> np.ndarray:
    """The top ``k`` article rows of each of ``customers`` by expected purchases."""
    ranked = np.empty((len(customers), k), np.int64)
    for lo, expected in expected_purchases(model, week, replay, start, customers):
        ranked[lo : lo + len(expected)] = _top_k(expected, k)
    return ranked


def _top_k(expected: np.ndarray, k: int) -> np.ndarray:
    """``recsim_ft.metrics.top_k`` of ``expected`` (equal values in article-row order), by
    ``torch.topk``, which selects without copying the block: the rows whose k-th value is
    shared with an article left out take ``top_k`` itself."""
    scores = torch.from_numpy(expected)
    best, index = torch.topk(scores, k + 1, dim=1)  # one past the k-th: is it a tie?
    tied = (best[:, k - 1] == best[:, k]).numpy()
    best, index = best[:, :k], index[:, :k]
    index, by_index = index.sort(dim=1)
    by_value = best.gather(1, by_index).sort(dim=1, descending=True, stable=True)[1]
    ranked = index.gather(1, by_value).numpy()
    if tied.any():
        ranked[tied] = top_k(expected[tied], k)
    return ranked


def _cell_mass(week: _WeekModel, distributions: np.ndarray, n_head: int | None) -> np.ndarray:
    """(rows, cells): each distribution's mass in each (index group, product group) cell."""
    cell = week.cell[:n_head] if n_head is not None else week.cell
    out = np.zeros((len(distributions), week.n_cells))
    for c in np.unique(cell):
        out[:, c] = distributions[:, cell == c].sum(axis=1)
    return out
