"""Shopping trips: the weeks of the synthetic H&M stand-in as the real data's (``trips=True`` in
``recsim_ft.envs.hm.synthetic``; issue 41).

A customer's purchases (their calibrated number stays) come in trips:

- **Activity.** Each customer is active over a window of the two years (a log-normal length,
  uniformly placed on the calendar taken as a circle, so every day is covered alike): some
  months, then quiet. Trips fall in it, more often in the summer (a yearly cosine of the whole
  shop's activity).
- **Baskets.** Each purchase after a customer's first starts a new trip with probability
  ``new_trip_share``, else joins one of their trips: a trip holds 1 / ``new_trip_share``
  purchases on average.
- **What is bought.** A trip's first purchase, and the other purchases that are ``fresh``, follow
  the stand-in's purchase model in that week: a top-1,000 article by the customer's segment (the
  calibrated preferences), a tail article by their taste over index groups (the dynamics'), each
  weighted by its sales life in that week (a release week, more often in its product group's
  season; then a Gamma life: sales rise, then fade). The top articles keep their calibrated
  two-year counts: each is released early enough to sell more than half of its life inside the
  data, the head's share of a week's purchases follows how many of them are on sale, and their
  weights are re-fitted to the counts. The
  other purchases of a trip belong with it: another colour of a product in this trip or the
  last one (``sibling_share``), a complement of the trip's first article (its index group, the
  product group of :data:`COMPLEMENTS`: a top with a bottom; ``complement_share``), or an
  article of the customer's last trip again (``repeat_share``, from their second trip on).

Every figure of the table in docs/hm_synthetic.md is measured by
``recsim_ft.envs.hm.measures.week_figures``; :data:`TRIPS`'s values were set so that those figures
fall in the real data's bands at full size. They are invented: the statistics are silent on trips.
``recsim_ft.envs.hm.ceiling`` replays the generator to rank by its own expected purchases.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import softmax

#: The invented parameters of the trips (see the module docstring): the customers' active
#: window (days: log-normal median and sigma), the share of purchases after a customer's first
#: that start a trip, the shop's summer peak (amplitude of a yearly cosine, its day of the year),
#: articles' sales lives (a Gamma of ``life_shape`` whose scale in days is log-normal: median and
#: sigma; the top articles' median of their own), how long before the data releases begin
#: (days), the shares of a trip's later purchases
#: that are a colour sibling, a complement or a repeat of the last trip's, and the mean days
#: from a purchase to its repeat.
TRIPS = {
    "active_days_median": 520.0,
    "active_days_sigma": 1.0,
    "new_trip_share": 0.3,
    "season_amplitude": 0.25,
    "season_peak_day": 170,
    "life_shape": 2,
    "life_days_median": 30.0,
    "life_days_sigma": 0.8,
    "released_before_data_days": 365,
    "head_life_days_median": 10.0,
    "sibling_share": 0.1,
    "complement_share": 0.15,
    "repeat_share": 0.11,
    "repeat_gap_days": 3.0,
}
#: What a purchase of a trip is: the trip's opening purchase, a fresh one (the purchase model
#: of the week), a complement of the opening, another colour (sibling) of the opening's or the
#: last trip's, a repeat of a purchase of the last trip.
KINDS = ("open", "fresh", "complement", "sibling", "repeat")
#: The product group a complement is drawn from, by the product group of the trip's first
#: article (invented from how outfits are put together); other groups get no complement.
COMPLEMENTS = {
    "Garment Upper body": "Garment Lower body",
    "Garment Lower body": "Garment Upper body",
    "Garment Full body": "Shoes",
    "Shoes": "Socks & Tights",
    "Socks & Tights": "Garment Lower body",
    "Underwear": "Underwear",
    "Nightwear": "Underwear",
    "Swimwear": "Swimwear",
    "Accessories": "Garment Upper body",
}


def _life_survival(days: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """P(age > days) of a Gamma(``life_shape``, scale) sales life (1 before the release): an
    integer shape, so the sum of a Poisson's first terms."""
    x = np.maximum(days, 0.0) / scale
    term, total = np.ones_like(x), np.ones_like(x)
    for i in range(1, TRIPS["life_shape"]):
        term = term * x / i
        total += term
    return np.exp(-x) * total


def _search(flat: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``np.searchsorted(flat, u, side="right")``, with ``u`` searched in sorted order: on a
    table of millions the sorted search stays in cache (3x faster at full size)."""
    order = np.argsort(u)
    found = np.empty(len(u), np.int64)
    found[order] = np.searchsorted(flat, u[order], side="right")
    return found


class _BlockSampler:
    """Draws an item from a block of consecutive items of ``order`` in a given week, with
    probability proportional to the week's weights: one flat array of per-week cumulative
    shares, ``week + cumulative share`` (float64), searched once for every draw."""

    def __init__(self, weights: np.ndarray, order: np.ndarray):
        """``weights``: (weeks, items); ``order``: the item of each position (blocks are
        consecutive positions)."""
        cumulative = np.cumsum(weights[:, order], axis=1)
        total = cumulative[:, -1:].copy()
        total[total == 0] = 1.0
        cumulative /= total
        self.n_weeks, self.n = cumulative.shape
        self.flat = (np.arange(self.n_weeks)[:, None] + cumulative).ravel()
        self.order = order

    def draw(
        self, rng: np.random.Generator, week: np.ndarray, lo: np.ndarray, hi: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(items, drawn): an item of positions [lo, hi) per week; drawn is False where the block
        sells nothing that week (its item is then -1)."""
        base = week * self.n
        low = np.where(lo > 0, self.flat[base + np.maximum(lo - 1, 0)] - week, 0.0)
        high = self.flat[base + hi - 1] - week
        drawn = high > low
        u = week + low + rng.random(len(week)) * (high - low)
        position = _search(self.flat, u) - base
        position = np.clip(position, lo, hi - 1)
        return np.where(drawn, self.order[position], -1), drawn


@dataclass
class _Trips:
    """Everything the trips share across the customers of one seed (see the module docstring)."""

    days: int
    week_of_day: np.ndarray  # (days,) week index, the last 7 days the last week
    day_cdf: np.ndarray  # (days + 1,) cumulative activity of the shop over the days
    release_week: np.ndarray  # (n_articles,)
    segment_row: np.ndarray  # (segments,) the segment's row of the head's table, -1: nobody
    head_flat: np.ndarray  # (segment row * weeks + week) + cumulative share over the head
    n_head: int
    n_weeks: int
    tail: _BlockSampler  # tail articles by index group
    tail_blocks: np.ndarray  # (groups + 1,) block edges of each index group in ``tail``
    tail_group_shares: np.ndarray
    outfits: _BlockSampler  # every article by (index group, product group)
    outfit_block: np.ndarray  # (groups, product groups, 2): [lo, hi) in ``outfits``
    complement_group: np.ndarray  # (product groups,) the complement's group, -1: none
    index_group: np.ndarray  # (n_articles,) code
    product_group: np.ndarray  # (n_articles,) code
    product_start: np.ndarray  # (n_articles,) first position of the article's product in
    product_size: np.ndarray  # ``product_members``, and how many colours it has
    product_rank: np.ndarray  # (n_articles,) the article's position within its product
    product_members: np.ndarray
    head_probability: np.ndarray  # (weeks,) share of a week's fresh purchases from the head
    taste_share: float  # share of the tail's fresh purchases steered by the customer's taste
    taste_concentration: float  # of the taste's Dirichlet (smaller: more peaked)

    def rows(
        self,
        rng: np.random.Generator,
        counts: np.ndarray,
        segment: np.ndarray,
        latents: dict | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(customer, article, day) of a chunk of customers with ``counts`` purchases each,
        grouped by customer in date order. A ``latents`` dict is filled with what the generator
        drew besides (for the ceiling, ``recsim_ft.envs.hm.ceiling``): each row's ``kind`` (one
        of :data:`KINDS`) and ``source`` (the row a complement, sibling or repeat was drawn from,
        -1 for the others), each customer's cumulative ``taste``."""
        n = len(counts)
        buyers = counts > 0
        n_trips = np.where(
            buyers, 1 + rng.binomial(np.maximum(counts - 1, 0), TRIPS["new_trip_share"]), 0
        )
        # each customer's active window and their trips' days in it, in units of the shop's
        # cumulative activity, on a circle (a window past the last day goes on from the first),
        # so that every day has its share of trips and the customers are active alike
        activity = self.day_cdf[-1]
        length = rng.lognormal(np.log(TRIPS["active_days_median"]), TRIPS["active_days_sigma"], n)
        length = np.minimum(length, self.days) * activity / self.days
        start = rng.random(n) * activity
        trip_customer = np.repeat(np.arange(n), n_trips)
        u = start[trip_customer] + rng.random(len(trip_customer)) * length[trip_customer]
        trip_day = np.searchsorted(self.day_cdf, u % activity, side="right") - 1
        trip_day = np.clip(trip_day, 0, self.days - 1)
        order = np.lexsort((trip_day, trip_customer))
        trip_day = trip_day[order]  # trips of a customer in date order
        trip_start = np.cumsum(n_trips) - n_trips  # each customer's first trip
        trip_rank = np.arange(len(trip_customer)) - trip_start[trip_customer]

        # purchases: the first n_trips of a customer open their trips, the others join one
        customer = np.repeat(np.arange(n), counts)
        position = np.arange(len(customer)) - (np.cumsum(counts) - counts)[customer]
        opens = position < n_trips[customer]
        rank = np.where(
            opens, position, (rng.random(len(customer)) * n_trips[customer]).astype(np.int64)
        )
        trip = trip_start[customer] + rank
        order = np.lexsort((~opens, trip))  # by trip, its opening purchase first
        customer, trip, opens = customer[order], trip[order], opens[order]
        week = self.week_of_day[trip_day[trip]]
        rows = len(customer)
        row_of_trip = np.flatnonzero(opens)  # each trip's opening row (trips in order)
        # what each later purchase of a trip is
        u = rng.random(rows)
        sibling = ~opens & (u < TRIPS["sibling_share"])
        complement = ~opens & ~sibling & (u < TRIPS["sibling_share"] + TRIPS["complement_share"])
        repeat = (
            ~opens
            & ~sibling
            & ~complement
            & (trip_rank[trip] > 0)
            & (u < TRIPS["sibling_share"] + TRIPS["complement_share"] + TRIPS["repeat_share"])
        )
        article = np.full(rows, -1, np.int64)
        taste = self._taste(rng, n)
        article[opens] = self._fresh(
            rng, week[opens], segment[customer[opens]], taste[customer[opens]]
        )
        # complements of the trip's opening article
        at = np.flatnonzero(complement)
        anchor = article[row_of_trip[trip[at]]]
        group = self.complement_group[self.product_group[anchor]]
        has = group >= 0
        block = self.outfit_block[self.index_group[anchor[has]], group[has]]
        drawn, ok = self.outfits.draw(rng, week[at[has]], block[:, 0], block[:, 1])
        article[at[has][ok]] = drawn[ok]
        # another colour of the trip's opening article or of the last trip's
        at = np.flatnonzero(sibling)
        previous = (trip_rank[trip[at]] > 0) & (rng.random(len(at)) < 0.5)
        sibling_source = row_of_trip[trip[at] - previous]
        source = article[sibling_source]
        size = self.product_size[source]
        other = (
            self.product_rank[source]
            + 1
            + (rng.random(len(at)) * np.maximum(size - 1, 1)).astype(np.int64)
        ) % size
        candidate = self.product_members[self.product_start[source] + other]
        ok = (size > 1) & (self.release_week[candidate] <= week[at])
        article[at[ok]] = candidate[ok]
        # the rest are fresh, then repeats copy a purchase of the last trip (not itself a repeat)
        fresh = (article < 0) & ~repeat
        article[fresh] = self._fresh(
            rng, week[fresh], segment[customer[fresh]], taste[customer[fresh]]
        )
        at = np.flatnonzero(repeat)
        last_trip = trip[at] - 1
        begin = row_of_trip[last_trip]
        end = np.append(row_of_trip, rows)[last_trip + 1]
        source = begin + (rng.random(len(at)) * (end - begin)).astype(np.int64)
        repeat_source = np.where(repeat[source], begin, source)
        article[at] = article[repeat_source]
        day = trip_day[trip]
        # a repeat comes soon after the purchase it repeats (bought again, in another size)
        gap = 1 + rng.exponential(TRIPS["repeat_gap_days"], len(at)).astype(np.int64)
        day[at] = np.minimum(day[repeat_source] + gap, np.maximum(day[at], day[repeat_source]))
        order = np.lexsort((day, customer))
        if latents is not None:
            kind = np.full(rows, KINDS.index("fresh"), np.int8)
            source = np.full(rows, -1, np.int64)
            for name, mask in (
                ("open", opens),
                ("complement", complement),
                ("sibling", sibling),
                ("repeat", repeat),
            ):
                kind[mask] = KINDS.index(name)
            source[complement] = row_of_trip[trip[complement]]
            source[sibling] = sibling_source
            source[at] = repeat_source
            position = np.empty(rows, np.int64)
            position[order] = np.arange(rows)
            moved = source[order]
            latents.update(
                kind=kind[order],
                source=np.where(moved >= 0, position[np.maximum(moved, 0)], -1),
                taste=taste,
            )
        return customer[order], article[order], day[order]

    def _taste(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Each customer's cumulative taste over the tail's index groups (the dynamics')."""
        groups = len(self.tail_group_shares)
        taste = rng.dirichlet(self.taste_concentration * groups * self.tail_group_shares, n)
        return np.cumsum(taste, axis=1)

    def _fresh(
        self, rng: np.random.Generator, week: np.ndarray, segment: np.ndarray, taste: np.ndarray
    ) -> np.ndarray:
        """Articles by the stand-in's purchase model in ``week``: a top article by segment, or a
        tail article, by the customer's taste over index groups for ``taste_share`` of them."""
        rows = len(week)
        article = np.empty(rows, np.int64)
        head = rng.random(rows) < self.head_probability[week]
        key = self.segment_row[segment[head]] * self.n_weeks + week[head]
        flat = _search(self.head_flat, key + rng.random(len(key)))
        article[head] = np.clip(flat - key * self.n_head, 0, self.n_head - 1)
        at = np.flatnonzero(~head)
        steered = rng.random(len(at)) < self.taste_share
        group = (rng.random(len(at))[:, None] > taste[~head][:, :-1]).sum(axis=1)
        lo = np.where(steered, self.tail_blocks[group], 0)
        hi = np.where(steered, self.tail_blocks[group + 1], self.tail_blocks[-1])
        drawn, ok = self.tail.draw(rng, week[at], lo, hi)
        if not ok.all():  # a taste group with nothing on sale that week: any tail article
            drawn[~ok], _ = self.tail.draw(
                rng,
                week[at[~ok]],
                np.zeros((~ok).sum(), np.int64),
                np.full((~ok).sum(), self.tail_blocks[-1]),
            )
        article[at] = drawn
        return article


def _life_mass(release_day: np.ndarray, life: np.ndarray, week_edges: np.ndarray) -> np.ndarray:
    """(weeks, articles) share of each article's lifetime sales in each week of the data: a
    Gamma life from its release (an article out long before the data, or at its end, sells
    little in it)."""
    survival = _life_survival(week_edges[:, None] - release_day[None, :], life[None, :])
    return survival[:-1] - survival[1:]


def build_trips(
    world: Any,
    seed: int,
    first: np.datetime64,
    days: int,
    season_peaks: dict[str, int],
    taste: dict[str, float],
) -> _Trips:
    """The trips of ``seed``'s stand-in over its ``world`` (``synthetic._World``: the catalogue
    with products; not imported, as ``synthetic`` imports this module) and its
    ``days`` from ``first``; ``season_peaks`` and ``taste`` (``taste_share``,
    ``taste_concentration``) as the dynamics' (``recsim_ft.envs.hm.synthetic``, whose
    ``trips_model`` calls this and caches it)."""
    n_head = len(world.head_target)
    rng = np.random.default_rng([seed, 6])
    shift = (7 - days % 7) % 7  # the last day closes the last week
    week_of_day = (np.arange(days) + shift) // 7
    n_weeks = int(week_of_day[-1]) + 1
    week_edges = np.arange(n_weeks + 1) * 7.0 - shift  # day where each week starts
    calendar = first + np.arange(days).astype("timedelta64[D]")
    day_of_year = (calendar - calendar.astype("datetime64[Y]")).astype(int)
    activity = 1 + TRIPS["season_amplitude"] * np.cos(
        2 * np.pi * (day_of_year - TRIPS["season_peak_day"]) / 365.25
    )
    day_cdf = np.concatenate([[0.0], np.cumsum(activity)])
    week_share = np.bincount(week_of_day, weights=activity) / activity.sum()

    # release weeks (each product group's season, releases on a week's first day) and lives
    articles = world.articles
    n = articles.num_rows
    groups = articles["product_group_name"].to_numpy(zero_copy_only=False).astype(str)
    before = TRIPS["released_before_data_days"]
    candidates = np.arange(-before, days)
    dates = first + candidates.astype("timedelta64[D]")
    release_doy = (dates - dates.astype("datetime64[Y]")).astype(int)
    release_day = np.empty(n, np.int64)
    for name in np.unique(groups):
        at = np.flatnonzero(groups == name)
        peak = season_peaks.get(name, rng.integers(0, 365))
        weight = 1 + 0.6 * np.cos(2 * np.pi * (release_doy - peak) / 365.25)
        release_day[at] = rng.choice(candidates, size=len(at), p=weight / weight.sum())
    release_week = np.floor((release_day + shift) / 7).astype(np.int64)
    life = rng.lognormal(np.log(TRIPS["life_days_median"]), TRIPS["life_days_sigma"], n)
    life[:n_head] *= TRIPS["head_life_days_median"] / TRIPS["life_days_median"]
    # the top articles (the two years' best sellers, calibrated over them) sell most of their
    # life inside the data (more than half: out from one mean life before it to one before its
    # end), so that the calibration compresses no life more than about twofold
    mean_life = TRIPS["life_shape"] * life[:n_head]
    low = np.maximum(-before, -mean_life)
    high = np.maximum(low + 7, days - mean_life)
    release_week[:n_head] = np.floor((low + rng.random(n_head) * (high - low) + shift) / 7)
    mass = _life_mass(release_week * 7.0 - shift, life, week_edges)  # (weeks, articles)
    mass[:, :n_head] /= mass[:, :n_head].sum(axis=0, keepdims=True)  # calibrated over the data
    # the top articles' share of a week's purchases follows how many of them are on sale
    target = world.head_target
    head_volume = mass[:, :n_head] @ target  # (weeks,) share of the head's sales in each week
    head_probability = np.minimum(world.head_share * head_volume / week_share, 0.9)

    # the head by segment and week, its weights re-fitted to the calibrated shares
    present = np.flatnonzero(world.population > 0)
    population, preference = world.population[present], world.preference[present]
    head_mass = mass[:, :n_head]
    log_weight = np.log(target)
    for _ in range(30):
        weight = softmax(log_weight + preference, axis=1)  # (segments, head), rows sum to 1
        norm = weight @ head_mass.T  # (segments, weeks)
        share = population @ (weight * ((head_volume / norm) @ head_mass))
        log_weight += np.log(target) - np.log(share)
    weight = softmax(log_weight + preference, axis=1)
    head_flat = np.empty((len(present), n_weeks, n_head))
    for k in range(len(present)):
        cdf = np.cumsum(weight[k] * head_mass, axis=1)
        head_flat[k] = k * n_weeks + np.arange(n_weeks)[:, None] + cdf / cdf[:, -1:]
    compact = np.full(len(world.population), -1, np.int64)
    compact[present] = np.arange(len(present))

    # the tail by index group, and every article by index group and product group
    index_names, index_group = np.unique(
        articles["index_group_name"].to_numpy(zero_copy_only=False).astype(str),
        return_inverse=True,
    )
    group_names, product_group = np.unique(groups, return_inverse=True)
    popularity = np.zeros(n)
    popularity[:n_head] = target * world.head_share
    popularity[n_head : n_head + len(world.tail_cdf)] = np.diff(world.tail_cdf, prepend=0.0) * (
        1 - world.head_share
    )
    tail = np.arange(n_head, n)
    tail_order = tail[np.argsort(index_group[tail], kind="stable")]
    tail_blocks = np.searchsorted(index_group[tail_order], np.arange(len(index_names) + 1))
    tail_group_shares = np.bincount(index_group[tail], popularity[tail], len(index_names))
    outfit_order = np.lexsort((product_group, index_group))
    key = index_group[outfit_order] * len(group_names) + product_group[outfit_order]
    edges = np.searchsorted(key, np.arange(len(index_names) * len(group_names) + 1))
    outfit_block = np.stack([edges[:-1], edges[1:]], axis=1).reshape(
        len(index_names), len(group_names), 2
    )
    complement = np.array(
        [
            np.searchsorted(group_names, COMPLEMENTS[g]) if g in COMPLEMENTS else -1
            for g in group_names
        ]
    )
    weekly = mass * popularity[None, :]

    # each article's product (its colours)
    code = articles["product_code"].to_numpy()
    members = np.argsort(code, kind="stable")
    _, start, size = np.unique(code[members], return_index=True, return_counts=True)
    product = np.empty(n, np.int64)
    product[members] = np.repeat(np.arange(len(start)), size)
    rank = np.empty(n, np.int64)
    rank[members] = np.arange(n) - np.repeat(start, size)
    return _Trips(
        days=days,
        week_of_day=week_of_day,
        day_cdf=day_cdf,
        release_week=release_week,
        segment_row=compact,
        head_flat=head_flat.ravel(),
        n_head=n_head,
        n_weeks=n_weeks,
        tail=_BlockSampler(weekly, tail_order),
        tail_blocks=tail_blocks,
        tail_group_shares=tail_group_shares / tail_group_shares.sum(),
        outfits=_BlockSampler(weekly, outfit_order),
        outfit_block=outfit_block,
        complement_group=complement,
        index_group=index_group,
        product_group=product_group,
        product_start=start[product],
        product_size=size[product],
        product_rank=rank,
        product_members=members,
        head_probability=head_probability,
        taste_share=taste["taste_share"],
        taste_concentration=taste["taste_concentration"],
    )
