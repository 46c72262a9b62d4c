"""``recsim-ft hm-competition``: the H&M competition's protocol on the Kaggle files or the
synthetic stand-in."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from recsim_ft import competition
from recsim_ft.agents.registry import REGISTRY
from recsim_ft.cli.options import (
    UsageError,
    add_option,
    add_training_options,
    distinct,
    non_negative_int,
    positive_int,
    training_options,
)
from recsim_ft.competition.candidates import RECALL_AT, recall_report, recall_table, rule_sources
from recsim_ft.competition.ranker import TwoStage
from recsim_ft.competition.submission import save_submission, submission_frame
from recsim_ft.competition.two_tower import (
    PRESET,
    TRAIN_WEEKS,
    checkpoint_folder,
    competition_config,
    fit_two_tower,
    rank_articles,
    two_tower_strategy,
)
from recsim_ft.envs.hm.ceiling import ceiling_strategy
from recsim_ft.envs.hm.data import (
    UNKNOWN_IDS,
    CatalogueFeatures,
    Transactions,
    read_features,
    read_transactions,
)
from recsim_ft.envs.hm.synthetic import synthetic_files
from recsim_ft.fileio import atomic_path
from recsim_ft.models import EMBEDDERS, TwoTower
from recsim_ft.models.presets import PRESETS
from recsim_ft.train import TrainConfig

#: the learned strategies of the command, beside the rules of ``competition.STRATEGIES``
TWO_TOWER, TWO_STAGE = "two_tower", "two_stage"
#: the stand-in with trips' own ceiling (``recsim_ft.envs.hm.ceiling``), a row by default there
CEILING = "ceiling"
STRATEGY_NAMES = (*competition.STRATEGIES, TWO_TOWER, TWO_STAGE, CEILING)
#: the synthetic stand-ins the command scores without --hm-data (``recsim_ft.envs.hm.synthetic``)
STAND_INS = {
    "trips": "weeks as the real data's: shopping trips, baskets, activity, repurchase",
    "dated": "the dated stand-in of the earlier tables: single purchases on independent days",
}
#: training options that need an env's users, which the competition's training has none of
NO_ENV_OPTIONS = ("eval_users", "eval_every", "eval_split", "ks", "select_metric")


def weeks_or_all(text: str) -> int | None:
    """``--train-weeks``: a positive count, or ``all`` (None)."""
    if text == "all":
        return None
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer or 'all', got {text!r}"
        ) from None


def cmd_hm_competition(args: argparse.Namespace) -> int:
    out = Path(args.out)
    files = [out / "competition.md", out / "competition.csv"]
    if args.recall:
        files += [out / "candidates.md", out / "candidates.csv"]
    if args.strategies and TWO_STAGE in args.strategies:
        files.append(out / "ranker_importance.csv")
    existing = [str(f) for f in files if f.exists()]
    if args.submission and Path(args.submission).exists():
        existing.append(args.submission)
    if existing and not args.overwrite:
        raise UsageError(f"{', '.join(existing)} exist(s); pass --overwrite to replace")
    on_trips = args.hm_data is None and args.stand_in == "trips"
    names = args.strategies or [*competition.STRATEGIES, *([CEILING] if on_trips else [])]
    if CEILING in names and not on_trips:
        raise UsageError(
            "the ceiling is the expected purchases of the stand-in with trips' own generator: "
            "it needs no --hm-data and --stand-in trips"
        )
    unknown = [s for s in names if s not in STRATEGY_NAMES]
    if unknown:
        raise UsageError(f"unknown strategy {unknown}; choose from {STRATEGY_NAMES}")
    if args.address is not None and args.workers is None:
        raise UsageError("--address names the Ray cluster of --workers: give --workers too")
    distinct("--strategies", names)
    distinct("--embedders", args.embedders)
    if args.hm_data is not None:
        source, data = f"the Kaggle files in {args.hm_data}", args.hm_data
    else:
        trips = args.stand_in == "trips"
        data = synthetic_files(args.users, seed=args.seed, dynamics=not trips, trips=trips)
        source = (
            f"the synthetic stand-in ({STAND_INS[args.stand_in]}), {args.users:,} customers, "
            f"seed {args.seed}"
        )
    try:
        transactions = read_transactions(data, args.hm_unknown_ids or "drop")
        learns = TWO_TOWER in names or TWO_STAGE in names
        features = read_features(data) if learns or args.recall else None
        config = competition_config(seed=args.seed, **training_options(args)).checked()
        learned = {  # the two-tower rows: label -> (embedder, its checkpoints)
            f"{TWO_TOWER} ({REGISTRY[embedder].label})": (embedder, out / TWO_TOWER / embedder)
            for embedder in (args.embedders if TWO_TOWER in names else ())
        }
        strategies = {
            name: competition.STRATEGIES[name] for name in names if name in competition.STRATEGIES
        }
        for label, (embedder, folder) in learned.items():
            strategies[label] = two_tower_strategy(
                features,
                embedder,
                config,
                weeks=args.train_weeks,
                out_dir=folder,
                resume=args.resume,
                progress=None,
                model_preset=args.model_preset,
                workers=args.workers,
                address=args.address,
            )
        rankers = {
            f"{TWO_STAGE} ({REGISTRY[embedder].label})": TwoStage(
                features, two_tower_fitter(features, embedder, config, out, args), seed=args.seed
            )
            for embedder in (args.embedders if TWO_STAGE in names else ())
        }
        strategies.update(rankers)
        if CEILING in names:
            strategies[CEILING] = ceiling_strategy(args.seed, args.users)
        if args.submission and len(strategies) != 1:
            raise UsageError(
                f"--submission writes one strategy's predictions, and {len(strategies)} are "
                f"named ({', '.join(strategies)}): name one with --strategies (and --embedders)"
            )
        results = competition.evaluate_weeks(transactions, strategies, weeks=args.weeks)
        outputs = [competition.markdown(results, source), results.to_csv(index=False)]
        if args.recall:
            recalls = candidate_recall(transactions, features, learned, config, args)
            outputs += [recall_report(recalls), recalls.to_csv(index=False)]
        if args.submission:
            (strategy,) = strategies.values()
            frame = submission_frame(strategy, transactions)
        if rankers:
            outputs.append(importance_table(rankers).to_csv(index=False))
    except (
        ConnectionError,
        FileNotFoundError,
        FileExistsError,
        ModuleNotFoundError,
        ValueError,
    ) as err:
        raise UsageError(str(err)) from None
    for path, content in zip(files, outputs, strict=True):
        with atomic_path(path) as tmp:
            tmp.write_text(content)
    print(
        "\n".join(text for path, text in zip(files, outputs, strict=True) if path.suffix == ".md"),
        end="",
    )
    if args.submission:
        save_submission(frame, args.submission)
        print(f"wrote {args.submission}: {len(frame):,} customers, {next(iter(strategies))}")
    return 0


def two_tower_fitter(
    features: CatalogueFeatures,
    embedder: str,
    config: TrainConfig,
    out: Path,
    args: argparse.Namespace,
) -> Callable[[Transactions], TwoTower]:
    """The two-stage strategy's two-tower model: trained on the transactions it is given, its
    checkpoints under ``out/two_stage/<embedder>``, one folder per last day."""

    def fit(transactions: Transactions) -> TwoTower:
        return fit_two_tower(
            transactions,
            features,
            embedder,
            config,
            weeks=args.train_weeks,
            out_dir=checkpoint_folder(out / TWO_STAGE / embedder, transactions),
            resume=args.resume,
            progress=None,
            model_preset=args.model_preset,
            address=args.address,
        )

    return fit


def importance_table(rankers: dict[str, TwoStage]) -> pd.DataFrame:
    """Each ranker's feature importance (total gain) per target week, largest first."""
    return pd.concat(
        [
            gains.rename("gain")
            .rename_axis("feature")
            .reset_index()
            .assign(strategy=label, through=through)
            for label, ranker in rankers.items()
            for through, gains in ranker.importances.items()
        ],
        ignore_index=True,
    )[["strategy", "through", "feature", "gain"]]


def candidate_recall(
    transactions: Transactions,
    features: CatalogueFeatures,
    learned: dict[str, tuple[str, Path]],
    config: TrainConfig,
    args: argparse.Namespace,
) -> pd.DataFrame:
    """Every candidate source's recall on each target week: the rules', and each two-tower
    model's top N (the model the strategy trained that week, read back from its checkpoints)."""
    rows = []
    for back in range(args.weeks):
        split = competition.split_week(transactions, back)
        n = max(RECALL_AT)
        sources = {
            name: source(split.train, split.customers, n)
            for name, source in rule_sources(features.product_codes).items()
        }
        for label, (embedder, folder) in learned.items():
            model = fit_two_tower(
                split.train,
                features,
                embedder,
                config,
                weeks=args.train_weeks,
                out_dir=checkpoint_folder(folder, split.train),
                resume=True,  # the strategy's finished run: read back, not trained again
                model_preset=args.model_preset,
            )
            sources[label] = rank_articles(model, features, split.customers, n)
        table = recall_table(sources, split)
        rows.append(table.rename_axis("source").reset_index().assign(week=split.week))
    return pd.concat(rows, ignore_index=True)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "hm-competition",
        help="the H&M competition's protocol: 12 articles per customer for a week, MAP@12, "
        "baseline strategies (Kaggle files or the synthetic stand-in)",
    )
    p.add_argument("--hm-data", help="directory of the Kaggle H&M files")
    add_option(
        p,
        "--users",
        "--customers",
        type=positive_int,
        default=100_000,
        help="customers of the synthetic stand-in, without --hm-data (default: 100,000)",
    )
    p.add_argument(
        "--seed",
        type=non_negative_int,
        default=0,
        help="the synthetic stand-in's seed, and the two-tower models' (default: 0)",
    )
    p.add_argument(
        "--stand-in",
        choices=tuple(STAND_INS),
        default="trips",
        help="which synthetic stand-in, without --hm-data: "
        + "; ".join(f"{name}: {what}" for name, what in STAND_INS.items())
        + " (default: trips)",
    )
    p.add_argument(
        "--weeks", type=positive_int, default=3, help="target weeks, the last ones (default 3)"
    )
    p.add_argument(
        "--strategies",
        nargs="+",
        metavar="NAME",
        help=f"from {' '.join(STRATEGY_NAMES)} (default: the rules, "
        f"{' '.join(competition.STRATEGIES)}, and on the stand-in with trips its {CEILING}); "
        f"{TWO_TOWER}: a two-tower model trained on the "
        f"weeks before each target week (recsim_ft.competition.two_tower); {TWO_STAGE}: "
        "candidates from every source re-ranked by LightGBM's LambdaRank, the two-tower model "
        f"a source and a feature (recsim_ft.competition.ranker; the 'rank' extra); {CEILING}: "
        "the generator's own expected purchases of the week, ranked: the best any strategy "
        "can expect there (recsim_ft.envs.hm.ceiling)",
    )
    p.add_argument(
        "--embedders",
        nargs="+",
        choices=EMBEDDERS,
        default=["mamba"],
        help=f"the towers of {TWO_TOWER} and {TWO_STAGE}, one row each (default: mamba)",
    )
    p.add_argument(
        "--model-preset",
        choices=tuple(PRESETS),
        default=PRESET,
        help=f"the size of the {TWO_TOWER} strategy's towers (default: {PRESET}, the paper's "
        "model; quick: a small one)",
    )
    p.add_argument(
        "--train-weeks",
        type=weeks_or_all,
        default=TRAIN_WEEKS,
        metavar="N",
        help=f"train {TWO_TOWER} on the last N weeks before each target week, or 'all' (default: "
        f"{TRAIN_WEEKS}, chosen on a validation week, see recsim_ft/competition/two_tower.py)",
    )
    add_training_options(p, exclude=NO_ENV_OPTIONS)
    p.add_argument(
        "--address",
        help="the Ray cluster of --workers, which train the learned strategies and rank "
        f"{TWO_TOWER}'s customers in blocks (default: a local Ray runtime with --workers CPUs)",
    )
    p.add_argument(
        "--submission",
        metavar="FILE",
        help="also write a Kaggle submission (customer_id,prediction for every customer; .gz "
        "compresses) of the one strategy named, trained on every transaction: the week after "
        "the data (an existing file needs --overwrite)",
    )
    p.add_argument(
        "--recall",
        action="store_true",
        help="also measure every candidate source's recall at N = "
        f"{', '.join(map(str, RECALL_AT))} (recsim_ft.competition.candidates), into "
        "candidates.md and .csv",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help=f"continue (or reuse) the {TWO_TOWER} checkpoints in --out (a finished one is reused)",
    )
    p.add_argument(
        "--hm-unknown-ids",
        choices=UNKNOWN_IDS,
        help="transactions naming customers or articles missing from their files: drop them, "
        "with a warning (the default), or stop with an error",
    )
    p.add_argument("--out", required=True, help="folder for competition.md and .csv")
    p.add_argument(
        "--overwrite", action="store_true", help="replace competition.md and .csv in --out"
    )
    p.set_defaults(func=cmd_hm_competition)
