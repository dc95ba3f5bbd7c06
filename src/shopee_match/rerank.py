"""Cross-encoder reranking of candidate pairs.

A bi-encoder + kNN blocks candidate pairs (:func:`split_pairs`: each split's own
neighbour lists, so a pair never straddles splits); a cross-encoder reads both
titles together and scores each pair (:func:`train_cross_encoder`,
:class:`Reranker`); the score is used alone or with the pair features (photos,
fused similarity, rank, neighbour statistics) in a classifier. Accepted pairs
become clusters (:func:`~shopee_match.matching.capped_components` splits chains by their
weakest edges); uncertain pairs go to a gray-zone file for labelling
(:func:`gray_band`, :func:`write_gray_zone`, :func:`read_labelled`); token
attributions explain single decisions (:func:`token_attributions`).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

#: marketplace filler that says nothing about the product (added to positives for invariance)
FILLERS = ("ORIGINAL", "100% ORI", "READY STOCK", "COD", "Murah", "Free Ongkir", "[PROMO]",
           "BEST SELLER", "Termurah", "NEW", "Bisa COD", "Grosir")
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
    from shopee_match.matching import candidate_pairs
    from shopee_match.neighbors import real_neighbors

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
                   augmented_share: float = 0.25) -> pd.DataFrame:
    """Balanced cross-encoder training pairs from the ``train`` split's candidate pairs.

    Negatives are the hardest (most similar) different-group pairs, at most
    ``max_negatives``. Positives match their number: same-group pairs (a seeded
    sample if there are more) and augmented copies (:func:`augment_title` on one
    side) — at least ``augmented_share`` of them, more when same-group pairs run
    short. ``extra`` (labelled gray-zone rows, :func:`read_labelled`) is appended.
    Columns: ``sentence1``, ``sentence2``, ``label`` (0/1), ``kind``.
    """
    rng = np.random.default_rng(seed)
    titles = np.asarray(titles, dtype=object)
    train = pairs[pairs["split"] == "train"]
    positives = train[train["label"]]
    negatives = train[~train["label"]].sort_values("sim", ascending=False, kind="stable")
    negatives = negatives.head(max_negatives)
    target = len(negatives)
    n_augmented = (max(target - len(positives), int(round(augmented_share * target)))
                   if len(positives) else 0)
    originals = positives.iloc[np.sort(rng.permutation(len(positives))[:target - n_augmented])]
    rows = [{"sentence1": titles[a], "sentence2": titles[b], "label": 1.0, "kind": "positive"}
            for a, b in zip(originals["a"], originals["b"])]
    rows += [{"sentence1": titles[a], "sentence2": titles[b], "label": 0.0,
              "kind": "hard negative"} for a, b in zip(negatives["a"], negatives["b"])]
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


def train_cross_encoder(pairs: pd.DataFrame, config: CrossEncoderConfig, root=None,
                        progress: bool = True) -> TrainedCrossEncoder:
    """Fine-tune a cross-encoder on ``pairs`` (:func:`training_pairs`) with
    sentence-transformers' ``CrossEncoderTrainer`` and ``BinaryCrossEntropyLoss``.

    Saved in ``artifacts/models/ce-<hash>/`` (hash of the config and the pairs);
    the same config and pairs again load the saved model instead of training.
    """
    import os

    from shopee_match.encoders import _sbert_path, pick_device
    from shopee_match.finetune import models_dir, seed_training
    from shopee_match.progress import silence_widget_warning

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
    silence_widget_warning()
    from datasets import Dataset
    from sentence_transformers.cross_encoder import (
        CrossEncoder,
        CrossEncoderTrainer,
        CrossEncoderTrainingArguments,
    )
    from sentence_transformers.cross_encoder.losses import BinaryCrossEntropyLoss

    seed_training(config.seed)
    model = CrossEncoder(_sbert_path(config.base), num_labels=1, max_length=config.max_length)
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
    trainer.train()
    model.save(str(folder / "model"))
    log = [entry for entry in trainer.state.log_history if "loss" in entry or
           "train_runtime" in entry]
    (folder / "training_log.json").write_text(json.dumps(log, indent=2))
    return TrainedCrossEncoder(folder, log, trained=True)


class Reranker:
    """The second stage of a :class:`~shopee_match.matcher.MatchConfig` with kind
    ``cross_encoder`` (the cross-encoder's probability) or ``rerank`` (a classifier over the
    pair features plus that probability). Saved as a folder: ``model/`` (the
    cross-encoder), for ``rerank`` ``classifier.joblib`` and, when set, ``gray_band.json``
    (the :func:`gray_band` of the cross-encoder's probability, for the service's log).
    ``engine`` runs the cross-encoder in torch or onnxruntime (``auto``: onnxruntime on the CPU,
    exported on first use; see :mod:`shopee_match.engines`)."""

    def __init__(self, folder: str | Path, classifier=None, batch_size: int = 64,
                 device: str | None = None, engine: str = "auto"):
        import os

        from shopee_match.progress import silence_widget_warning

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        silence_widget_warning()
        from sentence_transformers.cross_encoder import CrossEncoder

        self.folder = Path(folder)
        self.model = CrossEncoder(str(self.folder / "model"), device=device)
        from shopee_match.engines import resolve_engine

        self.engine = resolve_engine(engine, self.model.device.type)
        self._graph = None  # the exported ONNX graph and its input names, once needed
        self.classifier = classifier
        self.batch_size = batch_size
        self.pairs_per_second = float("nan")
        self.gray_band: tuple[float, float] | None = None

    @classmethod
    def load(cls, folder: str | Path, engine: str = "auto") -> Reranker:
        """A reranker saved with :meth:`save`."""
        import joblib

        path = Path(folder) / "classifier.joblib"
        reranker = cls(folder, joblib.load(path) if path.is_file() else None, engine=engine)
        band = Path(folder) / "gray_band.json"
        if band.is_file():
            saved = json.loads(band.read_text())
            reranker.gray_band = (float(saved["low"]), float(saved["high"]))
        return reranker

    def cross_encoder_only(self) -> Reranker:
        """This reranker without its classifier (the ``cross_encoder`` kind), sharing the
        loaded cross-encoder instead of loading it again."""
        import copy

        alone = copy.copy(self)
        alone.classifier = None
        return alone

    def save(self, folder: str | Path) -> Path:
        """Write ``model/`` and (if any) ``classifier.joblib`` to ``folder``."""
        import joblib

        folder = Path(folder)
        self.model.save(str(folder / "model"))
        if self.classifier is not None:
            joblib.dump(self.classifier, folder / "classifier.joblib")
        if self.gray_band is not None:
            low, high = self.gray_band
            (folder / "gray_band.json").write_text(json.dumps(
                {"low": float(low), "high": float(high), "on": "cross_encoder"}))
        return folder

    def score_titles(self, first: Sequence[str], second: Sequence[str], progress: bool = False
                     ) -> np.ndarray:
        """Cross-encoder match probability of each title pair (batched; pairs/s recorded)."""
        import time

        from shopee_match.progress import progress_bar

        pairs = list(zip(map(str, first), map(str, second)))
        out = np.zeros(len(pairs), dtype=np.float32)
        start = time.perf_counter()
        with progress_bar(total=len(pairs), desc="cross-encoder", disable=not progress,
                          leave=False) as bar:
            for lo in range(0, len(pairs), 1024):
                chunk = pairs[lo:lo + 1024]
                out[lo:lo + len(chunk)] = self._predict(chunk)
                bar.update(len(chunk))
        self.pairs_per_second = len(pairs) / max(time.perf_counter() - start, 1e-9)
        return out

    def _predict(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """The cross-encoder's probability of each pair, in batches of similar length."""
        if self.engine == "torch":
            return self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        import torch

        graph, names = self._onnx()
        order = np.argsort([len(a) + len(b) for a, b in pairs], kind="stable")
        out = np.zeros(len(pairs), dtype=np.float32)
        for lo in range(0, len(pairs), self.batch_size):
            rows = order[lo:lo + self.batch_size]
            features = self.model.preprocess([pairs[r] for r in rows])
            logits = graph(*(features[k].numpy() for k in names))
            out[rows] = self.model.activation_fn(torch.from_numpy(logits)).numpy().reshape(
                len(rows), -1)[:, 0]
        return out

    def _onnx(self):
        """The cross-encoder's ONNX graph (exported once per weights) and its input names."""
        if self._graph is None:
            from shopee_match.encoders import _as_module, file_digest
            from shopee_match.engines import onnx_model

            example = {k: v for k, v in self.model.preprocess([("a b c", "d"), ("e", "f g")])
                       .items() if hasattr(v, "shape")}
            names = list(example)
            module = _as_module(self.model, lambda m, *t: m(dict(zip(names, t)))["scores"])
            model_id = f"cross-encoder:{file_digest(self.folder / 'model' / 'model.safetensors')}"
            graph = onnx_model(module.eval(), tuple(example.values()), names,
                               [{0: "batch", 1: "tokens"}] * len(names), model_id)
            self._graph = graph, names
        return self._graph

    def pair_scores(self, titles: Sequence[str], i: np.ndarray, j: np.ndarray,
                    cache: dict | None = None, progress: bool = False) -> np.ndarray:
        """Probability for each directed pair ``(i, j)``; each unordered pair is scored once
        and kept in ``cache`` (a dict per gallery) for later calls."""
        cache = {} if cache is None else cache
        store = cache.setdefault(("cross_encoder", str(self.folder)), {})
        a, b = np.minimum(i, j), np.maximum(i, j)
        keys = a.astype(np.int64) * (len(titles) + 1) + b
        todo = np.unique(keys[[key not in store for key in keys]])
        if len(todo):
            ta, tb = todo // (len(titles) + 1), todo % (len(titles) + 1)
            titles = np.asarray(titles, dtype=object)
            store.update(zip(todo.tolist(), self.score_titles(titles[ta], titles[tb],
                                                              progress).tolist()))
        return np.array([store[key] for key in keys.tolist()], dtype=np.float32)

    def score(self, features: pd.DataFrame, titles: Sequence[str], i: np.ndarray,
              j: np.ndarray, cache: dict | None = None) -> np.ndarray:
        """Second-stage score of candidate pairs: the cross-encoder's probability, or the
        classifier's over ``features`` + that probability (column ``cross_encoder``)."""
        ce = self.pair_scores(titles, i, j, cache)
        if self.classifier is None:
            return ce
        from shopee_match.matching import pair_probabilities

        return pair_probabilities(self.classifier, with_ce(features, ce))


def rerank_training_data(galleries, split: str, config, reranker: Reranker
                         ) -> tuple[pd.DataFrame, np.ndarray]:
    """Pair features + cross-encoder probability and same-group labels of one split's
    candidate pairs (as :meth:`Reranker.score` sees them). Use a split the cross-encoder
    was not trained on, or its probabilities are over-confident."""
    from shopee_match.matching import candidate_pair_features

    i, j, features = candidate_pair_features(galleries.vectors[split], config,
                                             galleries.phash[split], galleries.cache[split])
    ce = reranker.pair_scores(galleries.titles[split], i, j, galleries.cache[split])
    labels = galleries.labels[split]
    return with_ce(features, ce), labels[i] == labels[j]


def with_ce(features: pd.DataFrame, ce: np.ndarray) -> pd.DataFrame:
    """Pair features with the cross-encoder probability as one more column."""
    return features.assign(cross_encoder=np.asarray(ce, dtype=np.float32))


def gray_band(scores: np.ndarray, is_match: np.ndarray, precision: float = 0.95,
              recall: float = 0.95) -> tuple[float, float]:
    """``(low, high)`` score band to send for labelling, chosen on val pairs: above ``high``
    accepted pairs are at least ``precision`` correct; above ``low`` at least ``recall`` of
    the matches are kept. Pairs scoring in ``[low, high)`` are the uncertain ones."""
    from sklearn.metrics import precision_recall_curve

    is_match = np.asarray(is_match, dtype=bool)
    if is_match.all() or not is_match.any():
        return float("nan"), float("nan")
    p, r, t = precision_recall_curve(is_match, scores)
    p, r = p[:-1], r[:-1]
    high = t[np.argmax(p >= precision)] if (p >= precision).any() else float(np.max(scores))
    low = t[np.flatnonzero(r >= recall).max()] if (r >= recall).any() else float(np.min(scores))
    return float(min(low, high)), float(high)


GRAY_COLUMNS = ["posting_id_1", "posting_id_2", "title_1", "title_2", "image_1", "image_2",
                "score", "label"]


def write_gray_zone(path: str | Path, postings: pd.DataFrame, a: np.ndarray, b: np.ndarray,
                    scores: np.ndarray) -> Path:
    """Write pairs for labelling: both ids, titles, image names and the score, most uncertain
    first, with an empty ``label`` column to fill with 1 (same product) or 0."""
    from shopee_match.files import atomic_write

    def column(name, rows):
        return postings[name].to_numpy()[rows] if name in postings else [""] * len(rows)

    table = pd.DataFrame({"posting_id_1": column("posting_id", a),
                          "posting_id_2": column("posting_id", b),
                          "title_1": column("title", a), "title_2": column("title", b),
                          "image_1": column("image", a), "image_2": column("image", b),
                          "score": np.round(scores, 4), "label": ""})
    table = table.iloc[np.argsort(np.abs(np.asarray(scores) - 0.5), kind="stable")]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as f:
        table.to_csv(f, index=False)
    return path


def read_labelled(path: str | Path, exclude_ids: Sequence[str] = ()) -> pd.DataFrame:
    """Labelled rows of a gray-zone file as training pairs (``sentence1``, ``sentence2``,
    ``label``). Rows without a 0/1 label are skipped; rows naming a posting in
    ``exclude_ids`` (val/test postings: training on them would leak) are dropped with
    a printed count. A missing file gives no rows."""
    path = Path(path)
    empty = pd.DataFrame(columns=["sentence1", "sentence2", "label"])
    if not path.is_file():
        return empty
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = sorted(set(GRAY_COLUMNS) - set(table.columns))
    if missing:
        raise ValueError(f"{path} lacks column(s) {missing}; it should be a file written by "
                         "write_gray_zone with the label column filled in.")
    labelled = table[table["label"].str.strip().isin(["0", "1"])]
    bad = table[~table["label"].str.strip().isin(["0", "1", ""])]
    if len(bad):
        lines = ", ".join(str(i + 2) for i in bad.index[:5])
        raise ValueError(f"{path}: label must be 1 (same product), 0 (different) or empty; "
                         f"see line(s) {lines}.")
    excluded = set(map(str, exclude_ids))
    leaks = labelled["posting_id_1"].isin(excluded) | labelled["posting_id_2"].isin(excluded)
    if leaks.any():
        print(f"{path}: {int(leaks.sum())} labelled pair(s) name val/test postings and are not "
              "used for training (they would leak into the evaluation).")
    labelled = labelled[~leaks]
    return pd.DataFrame({"sentence1": labelled["title_1"].to_numpy(),
                         "sentence2": labelled["title_2"].to_numpy(),
                         "label": labelled["label"].str.strip().astype(float).to_numpy()})


def token_attributions(model, first: str, second: str, steps: int = 32
                       ) -> list[tuple[str, float]]:
    """Importance of each token of a title pair for the cross-encoder's logit (captum's
    ``LayerIntegratedGradients`` on the word embeddings, from a baseline of [PAD] tokens with
    the special tokens kept); scores scaled to [-1, 1]."""
    import torch
    from captum.attr import LayerIntegratedGradients

    hf = model.model
    hf.eval()
    enc = model.tokenizer(first, second, return_tensors="pt", truncation=True,
                          max_length=model.max_seq_length)
    ids = enc["input_ids"]
    special = torch.tensor(model.tokenizer.get_special_tokens_mask(
        ids[0].tolist(), already_has_special_tokens=True), dtype=torch.bool)[None]
    baseline = torch.where(special, ids, torch.full_like(ids, model.tokenizer.pad_token_id))
    extra = {k: v for k, v in enc.items() if k != "input_ids"}

    def logit(input_ids):
        return hf(input_ids=input_ids, **{k: v.expand(len(input_ids), -1)
                                          for k, v in extra.items()}).logits[:, 0]

    lig = LayerIntegratedGradients(logit, hf.get_input_embeddings())
    attr = lig.attribute(ids, baselines=baseline, n_steps=steps).sum(-1)[0].detach().numpy()
    attr = attr / max(float(np.abs(attr).max()), 1e-12)
    tokens = model.tokenizer.convert_ids_to_tokens(ids[0])
    return [(t, float(a)) for t, a in zip(tokens, attr)]


def attribution_html(tokens: list[tuple[str, float]]) -> str:
    """Words as coloured spans (word pieces joined, their scores averaged): green pushed the
    pair towards "same product", red away from it; the score shows on hover."""
    import html

    words: list[list] = []
    for token, score in tokens:
        if token.startswith("##") and words:
            words[-1][0] += token[2:]
            words[-1][1].append(score)
        else:
            words.append([token, [score]])
    spans = []
    for word, scores in words:
        score = float(np.mean(scores))
        colour = (f"rgba(44,160,44,{abs(score):.2f})" if score >= 0 else
                  f"rgba(214,39,40,{abs(score):.2f})")
        spans.append(f"<span style='background:{colour};padding:1px 3px;border-radius:3px' "
                     f"title='{score:+.2f}'>{html.escape(word)}</span>")
    return "<div style='line-height:2'>" + " ".join(spans) + "</div>"
