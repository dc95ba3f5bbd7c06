"""Which saved candidate a run uses: the best on val that fits the catalog, the one to block
with, and the quick fallback when none fits."""

from __future__ import annotations

import logging

import pandas as pd

from shopee_match.apply.candidates import (
    Candidate,
    NoCandidateError,
    leaderboard,
    load_candidate,
    pick_candidate,
    require_one_scope,
    same_scope,
)
from shopee_match.data.paths import candidates_dir
from shopee_match.data.schema import IMAGE, IMAGE_OK

logger = logging.getLogger(__name__)


def reads_images(config) -> bool:
    """Whether a matcher configuration embeds photos (else titles only)."""
    from shopee_match.embed.identity import input_kind

    return any(input_kind(config.encoders[m], m) == "image" for m in config.modalities
               if m != "tfidf")


def choose_candidate(postings: pd.DataFrame, trained_on: str, split_seed: int = 0,
                     name: str | None = None, columns: str | dict | None = None,
                     image_size: int = 224, titles_only: bool = False) -> Candidate:
    """The candidate to match a catalog with: the one named, else the best on val among
    those made from ``trained_on`` that need only what the catalog has (no photos, or
    ``titles_only``: title models only), else a quick threshold candidate built on
    ``trained_on`` (with a warning)."""
    from shopee_match.apply.tuning import quick_candidate
    from shopee_match.data.datasets import train_fingerprint
    from shopee_match.embed.embeddings import resolve_profile
    from shopee_match.embed.identity import input_kind

    has_images = (not titles_only and IMAGE in postings
                  and bool(postings[IMAGE_OK].any()))
    fingerprint = train_fingerprint(trained_on, columns)
    if name:
        return pick_candidate(fingerprint, split_seed, name)[0]
    table = leaderboard(fingerprint, split_seed)
    fitting = [load_candidate(candidates_dir() / name)
               for name in table.loc[table["usable"], "candidate"]]
    fitting = [c for c in fitting if has_images or not reads_images(c.config)]
    if fitting:
        require_one_scope(table[table["candidate"].isin([c.name for c in fitting])])
        return fitting[0]
    profile = {m: s for m, s in resolve_profile("offline").items()
               if has_images or input_kind(s, m) != "image"}
    what = "title-only listings" if titles_only else "this catalog"
    logger.warning("no saved candidate made from %r fits %s; using a quick threshold "
                   "candidate (run notebook 03 on it to save a better one).", trained_on, what)
    return quick_candidate(trained_on, profile, image_size, split_seed, columns=columns)


def blocking_candidate(fingerprint: str, split_seed: int) -> Candidate | None:
    """The candidate whose encoders block pairs for the cross-encoder (notebook 05):
    notebook 04's fine-tuned one when it beats notebook 03's on val (or 03 saved none), else
    None (block with the frozen embeddings). Says why in the log."""
    try:
        finetuned = pick_candidate(fingerprint, split_seed, "04_finetuned")[0]
    except NoCandidateError as err:
        logger.info("%s -> blocking with the frozen embeddings", str(err).splitlines()[0])
        return None
    try:
        frozen = pick_candidate(fingerprint, split_seed, "03_thresholds")[0]
    except NoCandidateError as err:
        logger.info("%s -> blocking with 04_finetuned", str(err).splitlines()[0])
        return finetuned
    if not same_scope(frozen, finetuned):
        logger.info("04_finetuned (val %s, link %s) and 03_thresholds (val %s, link %s) were "
                    "chosen on different figures, which do not compare -> blocking with the "
                    "frozen embeddings", finetuned.metric, finetuned.link, frozen.metric,
                    frozen.link)
        return None
    if frozen.val_f1 >= finetuned.val_f1:
        logger.info("04_finetuned (val F1 %.4f) does not beat 03_thresholds (%.4f) on val -> "
                    "blocking with the frozen embeddings", finetuned.val_f1, frozen.val_f1)
        return None
    return finetuned
