"""Training the cross-encoder that reranks candidate pairs, and the labels people give it.

A bi-encoder + kNN blocks candidate pairs (:func:`split_pairs`: each split's own
neighbour lists, so a pair never straddles splits); a cross-encoder learns to read both
titles together (:func:`training_pairs`, :func:`train_cross_encoder`) and is then used
(:class:`~shopee_match.embed.cross_encoder.CrossEncoderModel`) alone or with the pair features
(photos, fused similarity, rank, neighbour statistics) in a classifier
(:func:`rerank_training_data`). Uncertain pairs go to a gray-zone file for labelling
(:func:`gray_band`, :func:`write_gray_zone`) and come back as training pairs
(:func:`read_labelled`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shopee_match.data.schema import IMAGE, POSTING_ID, TITLE
from shopee_match.embed.cross_encoder import CrossEncoderModel
from shopee_match.train.labels import names_any

#: marketplace filler that says nothing about the product (added to positives for invariance)
FILLERS = ("ORIGINAL", "100% ORI", "READY STOCK", "COD", "Murah", "Free Ongkir", "[PROMO]",
           "BEST SELLER", "Termurah", "NEW", "Bisa COD", "Grosir")
logger = logging.getLogger(__name__)
_PUNCT = re.compile(r"[\[\]\(\)\{\}【】!*#|/,+~_]")


def augment_title(title: str, rng: np.random.Generator) -> str:
    """A variant of ``title`` that names the same product: tokens shuffled, a filler phrase
    added, brackets and punctuation removed and/or the casing changed (two of these)."""
    def shuffle(t):
        tokens = t.split()
        return " ".join(tokens[i] for i in rng.permutation(len(tokens)))

    def filler(t):
        word = FILLERS[rng.integers(len(FILLERS))]
        return f"{word} {t}" if rng.random() < 0.5 else f"{t} {word}"

    def strip(t):
        return " ".join(_PUNCT.sub(" ", t).split())

    def case(t):
        return (t.lower(), t.upper(), t.title())[rng.integers(3)]

    ops = (shuffle, filler, strip, case)
    out = title
    for _ in range(5):  # until the text really changed
        for op in rng.choice(len(ops), 2, replace=False):
            out = ops[op](out)
        if out != title:
            return out
    return filler(title)


def split_pairs(galleries, weights: dict[str, float], k: int) -> pd.DataFrame:
    """Unordered candidate pairs of every split from that split's own fused top-``k`` lists.

    Columns: ``split``, ``a`` < ``b`` (row indices into the full postings), ``sim``
    (fused cosine), ``rank`` (the better of the two directions) and ``label`` (same
    label group). Pairs are blocked inside a split, so none straddles two splits.
    """
    from shopee_match.match.neighbors import real_neighbors
    from shopee_match.match.pairs import candidate_pairs

    frames = []
    for split, rows in galleries.rows.items():
        if len(rows) < 2:
            continue
        sims, idx = galleries.neighbors(split, weights, k)
        i, j, rank = candidate_pairs(idx)
        frame = pd.DataFrame({"a": np.minimum(i, j), "b": np.maximum(i, j),
                              "sim": sims[real_neighbors(idx)], "rank": rank})
        frame = frame.groupby(["a", "b"], as_index=False).agg(sim=("sim", "max"),
                                                             rank=("rank", "min"))
        labels = galleries.labels[split]
        frame["label"] = labels[frame["a"]] == labels[frame["b"]]
        frame["a"], frame["b"] = rows[frame["a"]], rows[frame["b"]]
        frames.append(frame.assign(split=split))
    return pd.concat(frames, ignore_index=True)[["split", "a", "b", "sim", "rank", "label"]]


def training_pairs(pairs: pd.DataFrame, titles: Sequence[str], max_negatives: int = 4000,
                   seed: int = 0, extra: pd.DataFrame | None = None,
                   augmented_share: float = 0.25, random_negatives: int = 0,
                   labels: Sequence | None = None, train_rows: np.ndarray | None = None
                   ) -> pd.DataFrame:
    """Balanced cross-encoder training pairs from the ``train`` split's candidate pairs.

    Negatives are the hardest (most similar) different-group pairs, at most
    ``max_negatives``, plus ``random_negatives`` random different-group pairs of the
    ``train_rows`` (with their ``labels``; easy pairs, which sentence-transformers'
    maintainers advise mixing in so the model also learns what is plainly different).
    Positives match their number: same-group pairs (a seeded sample if there are more) and
    augmented copies (:func:`augment_title` on one side) — at least ``augmented_share`` of
    them, more when same-group pairs run short. ``extra`` (labelled gray-zone rows,
    :func:`read_labelled`) is appended. Columns: ``sentence1``, ``sentence2``, ``label``
    (0/1), ``kind``.
    """
    rng = np.random.default_rng(seed)
    titles = np.asarray(titles, dtype=object)
    train = pairs[pairs["split"] == "train"]
    positives = train[train["label"]]
    negatives = train[~train["label"]].sort_values("sim", ascending=False, kind="stable")
    negatives = negatives.head(max_negatives).assign(kind="hard negative")
    if random_negatives:
        if labels is None or train_rows is None:
            raise ValueError("random negatives need the labels and the train rows")
        negatives = pd.concat([negatives, _random_negatives(
            np.asarray(train_rows), np.asarray(labels), random_negatives, rng)],
            ignore_index=True)
    target = len(negatives)
    n_augmented = (max(target - len(positives), int(round(augmented_share * target)))
                   if len(positives) else 0)
    originals = positives.iloc[np.sort(rng.permutation(len(positives))[:target - n_augmented])]
    rows = [{"sentence1": titles[a], "sentence2": titles[b], "label": 1.0, "kind": "positive"}
            for a, b in zip(originals["a"], originals["b"])]
    rows += [{"sentence1": titles[a], "sentence2": titles[b], "label": 0.0, "kind": kind}
             for a, b, kind in zip(negatives["a"], negatives["b"], negatives["kind"])]
    for pick in rng.integers(0, max(len(positives), 1), n_augmented):
        a, b = positives["a"].iloc[pick], positives["b"].iloc[pick]
        first, second = (titles[a], titles[b]) if rng.random() < 0.5 else (titles[b], titles[a])
        rows.append({"sentence1": augment_title(first, rng), "sentence2": second, "label": 1.0,
                     "kind": "augmented positive"})
    out = pd.DataFrame(rows, columns=["sentence1", "sentence2", "label", "kind"])
    if extra is not None and len(extra):
        out = pd.concat([out, extra.assign(kind="labelled gray zone")[out.columns]],
                        ignore_index=True)
    return out


def _random_negatives(rows: np.ndarray, labels: np.ndarray, n: int, rng: np.random.Generator
                      ) -> pd.DataFrame:
    """``n`` random pairs of ``rows`` from different label groups (columns ``a``, ``b``)."""
    a, b = rng.choice(rows, size=2 * n), rng.choice(rows, size=2 * n)
    keep = labels[a] != labels[b]
    return pd.DataFrame({"a": a[keep][:n], "b": b[keep][:n], "kind": "random negative"})


@dataclass(frozen=True)
class CrossEncoderConfig:
    """Training of the cross-encoder (every field goes into its saved model's key)."""

    base: str = "pypi-minilm"  # sbert-style folder/name the cross-encoder starts from
    epochs: int = 2
    batch_size: int = 32
    lr: float = 1e-4
    warmup: float = 0.1  # fraction of steps with a linear warm-up
    max_length: int = 48  # tokens of the two titles together
    seed: int = 0


@dataclass
class TrainedCrossEncoder:
    """A saved cross-encoder: its folder, training log and whether it was trained now."""

    folder: Path
    log: list[dict]
    trained: bool

    def load(self, engine: str = "auto", int8: bool = False) -> CrossEncoderModel:
        """The trained model, ready to score pairs (``int8``: its quantized ONNX graph)."""
        return CrossEncoderModel(self.folder / "model", engine=engine, int8=int8)


def train_cross_encoder(pairs: pd.DataFrame, config: CrossEncoderConfig, root=None,
                        progress: bool = True) -> TrainedCrossEncoder:
    """Fine-tune a cross-encoder on ``pairs`` (:func:`training_pairs`) with
    sentence-transformers' ``CrossEncoderTrainer`` and ``BinaryCrossEntropyLoss``.

    Saved in ``artifacts/models/ce-<hash>/`` (hash of the config and the pairs);
    the same config and pairs again load the saved model instead of training.
    """
    import os

    from shopee_match.data.paths import models_dir
    from shopee_match.embed.backbones import pick_device
    from shopee_match.embed.specs import sbert_path
    from shopee_match.progress import quiet_model_libraries
    from shopee_match.train.finetune import deterministic_torch, seed_training

    digest = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode())
    digest.update(pd.util.hash_pandas_object(pairs[["sentence1", "sentence2", "label"]],
                                             index=False).to_numpy().tobytes())
    folder = Path(root or models_dir()) / f"ce-{digest.hexdigest()[:16]}"
    if (folder / "training_log.json").is_file():
        return TrainedCrossEncoder(folder, json.loads((folder / "training_log.json").read_text()),
                                   trained=False)
    if pairs["label"].nunique() < 2:
        raise ValueError("cross-encoder training needs matching and non-matching pairs")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    quiet_model_libraries()
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss
    from transformers.utils import logging as transformers_logging

    seed_training(config.seed)
    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()  # not its "LOAD REPORT" of the new head
    try:
        model = CrossEncoder(sbert_path(config.base), num_labels=1, max_length=config.max_length)
    finally:
        transformers_logging.set_verbosity(verbosity)
    logger.info("cross-encoder: %s with a new one-logit classifier head, trained on %d pairs",
                config.base, len(pairs))
    data = Dataset.from_pandas(pairs[["sentence1", "sentence2", "label"]].reset_index(drop=True))
    args = CrossEncoderTrainingArguments(
        output_dir=str(folder / "trainer"), num_train_epochs=config.epochs,
        per_device_train_batch_size=config.batch_size, learning_rate=config.lr,
        warmup_steps=config.warmup, seed=config.seed, data_seed=config.seed,
        save_strategy="no", report_to="none", logging_steps=max(1, len(pairs) // config.batch_size
                                                                  // 20),
        disable_tqdm=not progress, dataloader_num_workers=0,
        dataloader_pin_memory=pick_device() == "cuda")
    trainer = CrossEncoderTrainer(model=model, args=args, train_dataset=data,
                                  loss=BinaryCrossEntropyLoss(model))
    with deterministic_torch():
        trainer.train()
    model.save(str(folder / "model"))
    log = [entry for entry in trainer.state.log_history if "loss" in entry or
           "train_runtime" in entry]
    (folder / "training_log.json").write_text(json.dumps(log, indent=2))
    return TrainedCrossEncoder(folder, log, trained=True)


def rerank_training_data(galleries, split: str, config, cross_encoder: CrossEncoderModel
                         ) -> tuple[pd.DataFrame, np.ndarray]:
    """Pair features + cross-encoder probability and same-group labels of one split's
    candidate pairs (as the reranker's classifier sees them). Use a split the cross-encoder
    was not trained on, or its probabilities are over-confident."""
    from shopee_match.match.decision import candidate_pair_features
    from shopee_match.match.pairs import with_ce

    gallery = galleries.splits[split]
    pairs = candidate_pair_features(gallery, config)
    ce = cross_encoder.pair_scores(gallery.titles, pairs.i, pairs.j, gallery.cache)
    labels = galleries.labels[split]
    return with_ce(pairs.features, ce), labels[pairs.i] == labels[pairs.j]


def gray_band(scores: np.ndarray, is_match: np.ndarray, precision: float = 0.95,
              recall: float = 0.95) -> tuple[float, float]:
    """``(low, high)`` score band to send for labelling, chosen on val pairs: above ``high``
    accepted pairs are at least ``precision`` correct; above ``low`` at least ``recall`` of
    the matches are kept. Pairs scoring in ``[low, high)`` are the uncertain ones."""
    from sklearn.metrics import precision_recall_curve

    from shopee_match.match.metrics import precision_threshold

    is_match = np.asarray(is_match, dtype=bool)
    if is_match.all() or not is_match.any():
        return float("nan"), float("nan")
    high = precision_threshold(scores, is_match, precision)
    high = float(np.max(scores)) if high is None else high
    _, r, t = precision_recall_curve(is_match, scores)
    kept = np.flatnonzero(r[:-1] >= recall)
    low = float(t[kept.max()]) if len(kept) else float(np.min(scores))
    return float(min(low, high)), float(high)


GRAY_COLUMNS = ["posting_id_1", "posting_id_2", "title_1", "title_2", "image_1", "image_2",
                "score", "label"]


def write_gray_zone(path: str | Path, postings: pd.DataFrame, a: np.ndarray, b: np.ndarray,
                    scores: np.ndarray) -> Path:
    """Offer pairs for labelling: both ids, titles, image names and the score, most uncertain
    first, with an empty ``label`` column to fill with 1 (same product) or 0.

    Labels already in the file are never lost: its labelled rows are kept as they are (after
    the new offers), a pair already labelled is not offered again, and only the unlabelled
    offers of an earlier run are replaced. A file that cannot be read is an error, never
    overwritten."""
    from shopee_match.files import atomic_write

    def column(name, rows):
        return postings[name].to_numpy()[rows] if name in postings else [""] * len(rows)

    path = Path(path)
    kept = read_gray_zone(path)
    kept = kept[kept["label"].str.strip() != ""][GRAY_COLUMNS]
    offers = pd.DataFrame({"posting_id_1": column(POSTING_ID, a),
                           "posting_id_2": column(POSTING_ID, b),
                           "title_1": column(TITLE, a), "title_2": column(TITLE, b),
                           "image_1": column(IMAGE, a), "image_2": column(IMAGE, b),
                           "score": np.round(scores, 4), "label": ""})
    offers = offers.iloc[np.argsort(np.abs(np.asarray(scores) - 0.5), kind="stable")]
    labelled = set(_pair_keys(kept))
    offers = offers[[key not in labelled for key in _pair_keys(offers)]]
    table = pd.concat([offers.astype(str), kept], ignore_index=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        table.to_csv(f, index=False)
    return path


def _pair_keys(table: pd.DataFrame) -> list[tuple[str, str]]:
    """Each row's pair of posting ids, in a fixed order (a pair is the same either way)."""
    from shopee_match.train.labels import pair_key

    return [pair_key(a, b) for a, b in zip(table["posting_id_1"], table["posting_id_2"])]


def read_gray_zone(path: str | Path) -> pd.DataFrame:
    """Every row of a gray-zone file as text (a ``line`` column gives its line), read as
    strictly as a catalog: a wrong encoding is read with a warning, a line with more or fewer
    fields, a missing column or a label other than 1, 0 or empty is an error naming the file
    and line. A missing file, or one with only its header (nothing was offered), gives no
    rows."""
    from shopee_match.data.postings import read_csv_rows

    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=[*GRAY_COLUMNS, "line"], dtype=str)
    if not path.read_bytes().strip():
        raise ValueError(f"{path} is empty: delete it (notebook 05 writes a new one) or put "
                         f"back its header line {','.join(GRAY_COLUMNS)}.")
    try:
        table = read_csv_rows(path, empty_ok=True)  # a header alone: nothing was offered
    except ValueError as err:
        raise ValueError(f"{err} (the gray-zone file of notebook 05)") from err
    missing = sorted(set(GRAY_COLUMNS) - set(table.columns))
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing}; it should be a file written by "
                         "notebook 05 (write_gray_zone) with the label column filled in.")
    bad = table[~table["label"].str.strip().isin(["0", "1", ""])]
    if len(bad):
        lines = ", ".join(str(line) for line in bad["line"][:5])
        raise ValueError(f"{path}: label must be 1 (same product), 0 (different) or empty; "
                         f"see line(s) {lines}.")
    return table


def read_labelled(path: str | Path, exclude_ids: Sequence[str] = ()) -> pd.DataFrame:
    """Labelled rows of a gray-zone file as training pairs (``sentence1``, ``sentence2``,
    ``label``). Rows without a 0/1 label are skipped; rows naming a posting in
    ``exclude_ids`` (stack, val or test postings: training on them would leak) are left out
    with a logged count (:func:`held_out_labels` gives them). A missing file gives no rows."""
    labelled = _labelled(read_gray_zone(path))
    leaks = names_any(labelled, exclude_ids)
    if leaks.any():
        logger.warning("%s: %d labelled pair(s) name stack, val or test postings: kept as "
                       "evaluation labels, not used for training (they would leak into the "
                       "evaluation).", path, int(leaks.sum()))
    labelled = labelled[~leaks]
    return pd.DataFrame({"sentence1": labelled["title_1"].to_numpy(),
                         "sentence2": labelled["title_2"].to_numpy(),
                         "label": labelled["label"].str.strip().astype(float).to_numpy()})


def held_out_labels(path: str | Path, held_out_ids: Sequence[str]) -> pd.DataFrame:
    """The labelled rows of a gray-zone file that name a held-out posting: evaluation
    labels, kept in the file and never trained on."""
    labelled = _labelled(read_gray_zone(path))
    return labelled[names_any(labelled, held_out_ids)].reset_index(drop=True)


def _labelled(table: pd.DataFrame) -> pd.DataFrame:
    return table[table["label"].str.strip().isin(["0", "1"])]
