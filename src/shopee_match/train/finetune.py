"""P×K metric-learning fine-tuning: sampler, losses, one training loop, three regimes.

- :class:`PKSampler` yields batches of P label groups × K listings each.
- :func:`make_loss` builds the loss from pytorch-metric-learning: supervised
  contrastive (InfoNCE over all in-batch pairs), ArcFace or Sub-center ArcFace
  (with a margin ramp) or a triplet baseline.
- :func:`fit` is the single training loop (AdamW, warm-up + cosine, gradient
  clipping, AMP on CUDA, best epoch by val F1, a checkpoint per epoch, resumable).
- Regimes: ``head`` (a projection over frozen, cached embeddings of the dense
  modalities), ``image`` (the image backbone's last blocks + a pool → BN → L2
  neck, with augmentation) and ``text`` (the SBERT model itself).

A trained model is saved under ``artifacts/models/<key>/`` (the key hashes the
base model, data fingerprint, split seed and hyper-parameters) in the format of
:mod:`shopee_match.embed.finetuned` and used through an encoder spec: ``finetuned:<dir>`` for
``head`` and ``image``, ``sbert:<dir>`` for ``text``. Training the same thing again loads the
saved model.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from shopee_match.data.paths import models_dir
from shopee_match.embed.finetuned import (
    FineTunedModel,
    image_tower,
    projection_head,
    read_meta,
    spec_of,
)
from shopee_match.embed.specs import EncoderSpec

FINETUNE_VERSION = 1
REGIMES = ("head", "image", "text")
LOSSES = ("supcon", "arcface", "subcenter_arcface", "triplet")
#: titles per forward pass in text training: a P x K batch runs as chunks of similar length
TEXT_CHUNK = 32


def usable_p(labels: Sequence, p: int) -> int:
    """``p`` label groups per batch, or fewer when the training rows have fewer groups with
    two or more listings (at least 2 are needed; else a ValueError that says so)."""
    _, counts = np.unique(np.asarray(labels), return_counts=True)
    pairs = int((counts >= 2).sum())
    if pairs < 2:
        raise ValueError(f"P x K fine-tuning needs at least 2 label groups with 2+ listings in "
                         f"the training split; it has {pairs}. Use more labelled data.")
    return min(p, pairs)


class PKSampler:
    """Batches of ``p`` distinct label groups × ``k`` listings each (indices into ``labels``).

    Only groups with at least two listings are sampled (a lone listing has no
    positive). An epoch visits every such group once, in a seeded random order;
    the last batch is topped up with groups drawn from the rest, so every batch
    has exactly ``p`` groups. A group with fewer than ``k`` listings contributes
    all of them plus repeats drawn with replacement (with augmentation, repeats
    are different views). Call :meth:`set_epoch` to get that epoch's batches.
    With ``max_batches`` > 0 an epoch stops after that many batches (a different random
    subset of groups each epoch): bounded training time on large data.
    """

    def __init__(self, labels: Sequence[int], p: int, k: int, seed: int = 0,
                 max_batches: int = 0):
        if p < 2 or k < 2:
            raise ValueError(f"P×K needs P >= 2 groups and K >= 2 listings, got P={p}, K={k}")
        labels = np.asarray(labels)
        groups, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        members = np.argsort(inverse, kind="stable")
        bounds = np.concatenate([[0], np.cumsum(counts)])
        self.members = [members[bounds[g]:bounds[g + 1]] for g in range(len(groups))
                        if counts[g] >= 2]
        if len(self.members) < p:
            raise ValueError(
                f"P={p} needs at least {p} label groups with 2+ listings, but the training "
                f"data has {len(self.members)}; lower P or use more data.")
        self.p, self.k, self.seed, self.epoch = p, k, seed, 0
        self.max_batches = max_batches

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose batches :meth:`__iter__` yields (deterministic per seed)."""
        self.epoch = epoch

    def __len__(self) -> int:
        full = math.ceil(len(self.members) / self.p)
        return min(full, self.max_batches) if self.max_batches > 0 else full

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.members))
        for start in range(0, len(self) * self.p, self.p):
            chosen = order[start:start + self.p]
            if len(chosen) < self.p:  # top up the last batch with other groups
                rest = np.setdiff1d(order, chosen)
                chosen = np.concatenate([chosen, rng.choice(rest, self.p - len(chosen),
                                                            replace=False)])
            batch = []
            for g in chosen:
                group = self.members[g]
                if len(group) >= self.k:
                    batch.extend(rng.choice(group, self.k, replace=False))
                else:
                    batch.extend(group)
                    batch.extend(rng.choice(group, self.k - len(group), replace=True))
            yield [int(i) for i in batch]


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one fine-tuning run (all of them go into the model's key)."""

    regime: str = "head"  # head | image | text
    loss: str = "supcon"  # supcon | arcface | subcenter_arcface | triplet
    p: int = 16  # label groups per batch
    k: int = 4  # listings per group in a batch
    epochs: int = 5
    max_batches: int = 0  # batches per epoch at most (0: every training group once)
    lr: float = 1e-3  # model (head / unfrozen layers)
    loss_lr: float = 0.1  # ArcFace class centres (their own, larger-LR parameter group)
    weight_decay: float = 1e-4
    warmup: float = 0.1  # fraction of steps with a linear warm-up
    clip_norm: float = 1.0
    temperature: float = 0.1  # supcon
    margin: tuple[float, float] = (0.2, 0.8)  # ArcFace margin in radians, ramped first -> last
    scale: float = 30.0  # ArcFace logit scale
    out_dim: int = 256  # head: joint embedding size
    hidden: int = 0  # head: 0 = linear projection, > 0 = MLP with this many hidden units
    unfrozen_blocks: int = 2  # image: backbone blocks trained (from the top)
    image_size: int = 128  # image: training and embedding input side
    max_tokens: int = 48  # text: title tokens
    seed: int = 0

    def __post_init__(self):
        if self.regime not in REGIMES:
            raise ValueError(f"Unknown regime {self.regime!r}; choose one of {REGIMES}")
        if self.loss not in LOSSES:
            raise ValueError(f"Unknown loss {self.loss!r}; choose one of {LOSSES}")
        if self.epochs < 1:
            raise ValueError("epochs must be >= 1")
        if self.max_batches < 0:
            raise ValueError("max_batches must be >= 0 (0: every training group once)")


def make_loss(name: str, num_classes: int, dim: int, config: TrainConfig):
    """``(loss, miner)`` from pytorch-metric-learning (miner None except for triplet).

    ArcFace losses hold class centres (trainable); their margin is set in radians
    by :func:`arcface_margin` each epoch (PML takes degrees only in its constructor).
    """
    from pytorch_metric_learning import losses, miners

    if name == "supcon":
        return losses.SupConLoss(temperature=config.temperature), None
    if name in ("arcface", "subcenter_arcface"):
        cls = losses.ArcFaceLoss if name == "arcface" else losses.SubCenterArcFaceLoss
        loss = cls(num_classes=num_classes, embedding_size=dim,
                   margin=float(np.degrees(config.margin[0])), scale=config.scale)
        return loss, None
    if name == "triplet":
        return losses.TripletMarginLoss(margin=0.1), miners.TripletMarginMiner(
            margin=0.1, type_of_triplets="semihard")
    raise ValueError(f"Unknown loss {name!r}; choose one of {LOSSES}")


def arcface_margin(epoch: int, epochs: int, margin: tuple[float, float]) -> float:
    """Margin (radians) of an epoch: linear ramp from ``margin[0]`` to ``margin[1]``."""
    start, end = margin
    return start if epochs == 1 else start + (end - start) * epoch / (epochs - 1)


def seed_training(seed: int) -> None:
    """Seed what training draws from: torch (initial weights, dropout) and Python's
    ``random`` (timm's and torchvision's augmentations)."""
    import random

    import torch

    random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def deterministic_torch():
    """Torch's deterministic algorithms for a training run (on CUDA also cuBLAS's fixed
    workspace and no cuDNN autotuning), restored afterwards: the same data, seed, thread
    count and hardware give the same weights. (Other thread counts or CPUs still round
    differently; the README says by how much that moves the figures.)"""
    import torch

    before = torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when CUDA starts
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.benchmark = before[1]


def lr_factor(step: int, total: int, warmup: float) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup`` of the steps, then cosine."""
    warm = max(1, int(round(warmup * total)))
    if step < warm:
        return (step + 1) / warm
    return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


@dataclass
class History:
    """Per-epoch loss, val F1, time and speed; ``best_epoch`` is the one kept."""

    epochs: list[dict] = field(default_factory=list)
    best_epoch: int = -1

    @property
    def best_val_f1(self) -> float:
        return self.epochs[self.best_epoch]["val_f1"] if self.epochs else float("nan")


def batches_from(load_batch: Callable[[list[int]], object]) -> Callable:
    """``batches`` for :func:`fit` that loads each batch's inputs in this process."""
    return lambda sampler: ((rows, load_batch(rows)) for rows in sampler)


def fit(model, batches: Callable[[PKSampler], Iterable[tuple[list[int], object]]],
        forward: Callable, labels: Sequence[int], config: TrainConfig,
        val_f1: Callable[[object], float], workdir: str | Path | None = None,
        device: str = "cpu", progress: bool = True) -> History:
    """Train ``model`` on P×K batches; keep the weights of the epoch with the best val F1.

    ``batches(sampler)`` yields ``(indices, inputs)`` for the sampler's batches of
    training rows (:func:`batches_from`, or a DataLoader with workers);
    ``forward(model, inputs)`` gives their embeddings; ``labels`` are the training rows'
    label groups; ``val_f1(model)`` scores the model on the val split (the
    selection protocol's choice, never test). With a ``workdir`` a checkpoint is
    written after every epoch and an interrupted run resumes from it.

    Training runs with torch's deterministic algorithms (:func:`deterministic_torch`).
    """
    with deterministic_torch():
        return _fit(model, batches, forward, labels, config, val_f1, workdir, device, progress)


def _fit(model, batches: Callable[[PKSampler], Iterable[tuple[list[int], object]]],
         forward: Callable, labels: Sequence[int], config: TrainConfig,
         val_f1: Callable[[object], float], workdir: str | Path | None = None,
         device: str = "cpu", progress: bool = True) -> History:
    """:func:`fit` itself."""
    import torch

    from shopee_match.progress import progress_bar

    seed_training(config.seed)
    labels = np.asarray(labels)
    classes = np.unique(labels, return_inverse=True)[1]
    sampler = PKSampler(labels, config.p, config.k, config.seed, config.max_batches)
    model.to(device)
    with torch.no_grad():  # one probe batch gives the embedding size
        dim = int(forward(model.eval(), next(iter(batches(sampler)))[1]).shape[1])
    loss_fn, miner = make_loss(config.loss, int(classes.max()) + 1, dim, config)
    loss_fn.to(device)
    groups = [{"params": [p for p in model.parameters() if p.requires_grad], "lr": config.lr}]
    if any(True for _ in loss_fn.parameters()):
        groups.append({"params": list(loss_fn.parameters()), "lr": config.loss_lr,
                       "weight_decay": 0.0})
    optimizer = torch.optim.AdamW(groups, weight_decay=config.weight_decay)
    total = config.epochs * len(sampler)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, total, config.warmup))
    amp = device == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    history, best_state, start = History(), None, 0
    checkpoint = Path(workdir) / "last.pt" if workdir else None
    if checkpoint is not None and checkpoint.is_file():
        state = torch.load(checkpoint, map_location=device, weights_only=False)
        model.load_state_dict(state["model"])
        loss_fn.load_state_dict(state["loss"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        history, best_state, start = state["history"], state["best"], state["epoch"] + 1
    for epoch in range(start, config.epochs):
        sampler.set_epoch(epoch)
        if hasattr(loss_fn, "margin") and config.loss != "triplet":
            loss_fn.margin = arcface_margin(epoch, config.epochs, config.margin)
        model.train()
        began, seen, losses = time.perf_counter(), 0, []
        bar = progress_bar(batches(sampler), total=len(sampler), disable=not progress,
                           leave=False, desc=f"{config.regime} epoch {epoch + 1}/{config.epochs}")
        for batch, inputs in bar:
            target = torch.as_tensor(classes[batch], device=device)
            with torch.autocast(device_type="cuda", enabled=amp):
                emb = forward(model, inputs)
            emb = emb.float()
            loss = loss_fn(emb, target, miner(emb, target) if miner else None)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_([p for g in groups for p in g["params"]],
                                           config.clip_norm)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            seen += len(batch)
            losses.append(float(loss.detach()))
            if progress:
                bar.set_postfix(loss=f"{losses[-1]:.3f}")
        train_seconds = time.perf_counter() - began
        model.eval()
        score = float(val_f1(model))
        history.epochs.append({"epoch": epoch + 1, "loss": float(np.mean(losses)),
                               "val_f1": score, "seconds": round(train_seconds, 2),
                               "per_second": seen / max(train_seconds, 1e-9)})
        if history.best_epoch < 0 or score > history.best_val_f1:
            history.best_epoch = len(history.epochs) - 1
            best_state = copy.deepcopy(model.state_dict())
        if checkpoint is not None:
            checkpoint.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"model": model.state_dict(), "loss": loss_fn.state_dict(),
                        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                        "history": history, "best": best_state, "epoch": epoch},
                       checkpoint)
    model.load_state_dict(best_state)
    model.eval()
    return history


def model_key(config: TrainConfig, base: dict[str, str], data_fingerprint: str,
              split_seed: int) -> str:
    """Folder name of a fine-tuned model: regime + a hash of everything it was made from."""
    meta = {"config": asdict(config), "base": base, "data": data_fingerprint,
            "split_seed": split_seed, "version": FINETUNE_VERSION}
    digest = hashlib.sha256(json.dumps(meta, sort_keys=True).encode()).hexdigest()[:16]
    return f"{config.regime}-{digest}"


class TrainImages:
    """Map-style dataset of training photos: ``(augmented image, row)``; an unreadable file
    gives a blank image (the batch keeps its shape)."""

    def __init__(self, paths: Sequence[str], transform, size: int):
        self.paths, self.transform, self.size = list(paths), transform, size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, row: int):
        import torch

        from shopee_match.embed.encoders import open_rgb

        try:
            return self.transform(open_rgb(self.paths[row])), row
        except Exception:  # missing or corrupt: flagged by data validation, not fatal here
            return torch.zeros(3, self.size, self.size), row


@dataclass
class FineTuned:
    """A fine-tuned encoder: its spec, folder, training history and whether it was trained
    now (False: loaded from an earlier run with the same key)."""

    spec: str
    folder: Path
    history: History
    trained: bool


def _saved(folder: Path) -> FineTuned | None:
    meta = read_meta(folder)
    if meta is None:
        return None
    history = History(**meta["history"])
    return FineTuned(spec_of(folder), folder, history, trained=False)


def _folder(config: TrainConfig, base: dict, fingerprint: str, split_seed: int, root) -> Path:
    return Path(root or models_dir()) / model_key(config, base, fingerprint, split_seed)


def _save(folder: Path, model, meta: dict, history: History) -> str:
    """Save a trained model with its history (as a
    :class:`~shopee_match.embed.finetuned.FineTunedModel`); returns its encoder spec. The
    resume checkpoint (weights, optimizer state and best epoch: ~4x the model) goes once the
    model is saved: a finished model is loaded, never resumed."""
    spec = FineTunedModel(model, {**meta, "history": asdict(history)}).save(folder)
    shutil.rmtree(folder / "checkpoint", ignore_errors=True)
    return spec


def train_head(vectors: dict[str, np.ndarray], labels: Sequence[int], split: np.ndarray,
               config: TrainConfig, base: dict[str, str], image_size: int, fingerprint: str,
               split_seed: int, k: int = 50, root=None, device: str | None = None,
               progress: bool = True, int8: bool = False) -> FineTuned:
    """Train (or load) a projection head over the frozen, cached ``vectors`` (dense modalities,
    concatenated in name order) on the ``train`` rows of ``split``; epochs chosen on ``val``.
    ``base`` maps each input modality to its encoder spec and ``int8`` says whether its title
    vectors came from int8 models (both recorded, so its inputs are embedded the same way)."""
    import torch

    from shopee_match.embed.backbones import pick_device
    from shopee_match.match.selection import best_static_f1

    names = sorted(vectors)
    folder = _folder(config, {m: base[m] for m in names} | {"image_size": image_size}
                     | ({"int8": True} if int8 else {}), fingerprint, split_seed, root)
    if (done := _saved(folder)) is not None:
        return done
    device = device or pick_device()
    x = torch.from_numpy(np.concatenate([vectors[m] for m in names], axis=1).astype(np.float32))
    labels = np.asarray(labels)
    train, val = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    seed_training(config.seed)
    model = projection_head(x.shape[1], config.out_dim, config.hidden)

    def val_f1(m):
        with torch.no_grad():
            return best_static_f1(m(x[val].to(device)).cpu().numpy(), labels[val], k)

    history = fit(model, batches_from(lambda rows: x[train[rows]].to(device)),
                  lambda m, inputs: m(inputs), labels[train], config, val_f1,
                  folder / "checkpoint", device, progress)
    meta = {"kind": "head", "inputs": {m: base[m] for m in names}, "image_size": image_size,
            "input_dims": {m: int(vectors[m].shape[1]) for m in names},
            "in_dim": int(x.shape[1]), "out_dim": config.out_dim, "hidden": config.hidden,
            "config": asdict(config), "int8": int8}
    return FineTuned(_save(folder, model.cpu(), meta, history), folder, history, True)


def train_image(paths: Sequence[str], labels: Sequence[int], split: np.ndarray,
                config: TrainConfig, base_spec: str, fingerprint: str, split_seed: int,
                k: int = 50, root=None, device: str | None = None, progress: bool = True
                ) -> FineTuned:
    """Train (or load) the image tower of ``base_spec`` (top ``config.unfrozen_blocks`` + a
    BN neck) on augmented training photos; epochs chosen by val F1 of the embedded val photos."""
    import torch

    from shopee_match.embed.backbones import image_transform, pick_device
    from shopee_match.embed.encoders import ImageEncoder
    from shopee_match.match.selection import best_static_f1

    folder = _folder(config, {"image": base_spec}, fingerprint, split_seed, root)
    if (done := _saved(folder)) is not None:
        return done
    device = device or pick_device()
    size = config.image_size
    base = EncoderSpec.parse(base_spec)
    if base.kind == "open_clip":
        from shopee_match.embed.backbones import clip_image_size, load_open_clip

        size = clip_image_size(load_open_clip(base.name, base.weights)[0])
    paths, labels = list(paths), np.asarray(labels)
    train, val = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")
    seed_training(config.seed)
    # channels-last convolutions: 1.4x the images per second of a training step on 2 cores
    model = image_tower(base_spec, config.unfrozen_blocks).to(memory_format=torch.channels_last)
    augment = image_transform(base_spec, size, training=True)
    plain = image_transform(base_spec, size)

    images = TrainImages([paths[i] for i in train], augment, size)
    workers = 4 if device == "cuda" else 0  # 2 CPU cores: decoding beside the model is slower

    def batches(sampler):
        loader = torch.utils.data.DataLoader(images, batch_sampler=sampler, num_workers=workers,
                                             pin_memory=device == "cuda")
        for batch, rows in loader:
            yield rows.tolist(), batch.to(device, non_blocking=True,
                                          memory_format=torch.channels_last)

    def val_f1(m):
        encoder = ImageEncoder(m, plain, "training", size, 0, device=device, workers=0)
        return best_static_f1(encoder.encode([paths[i] for i in val])[0], labels[val], k)

    history = fit(model, batches, lambda m, inputs: m(inputs), labels[train], config, val_f1,
                  folder / "checkpoint", device, progress)
    model.to(memory_format=torch.contiguous_format)  # saved, exported and loaded as usual
    meta = {"kind": "image", "base": base_spec, "image_size": size,
            "unfrozen_blocks": config.unfrozen_blocks, "config": asdict(config)}
    return FineTuned(_save(folder, model.cpu(), meta, history), folder, history, True)


def train_text(titles: Sequence[str], labels: Sequence[int], split: np.ndarray,
               config: TrainConfig, base_spec: str, fingerprint: str, split_seed: int,
               k: int = 50, root=None, device: str | None = None, progress: bool = True
               ) -> FineTuned:
    """Train (or load) the SBERT model of ``base_spec`` on P×K batches of titles (the same
    loop and losses as the other regimes); saved as a sentence-transformers folder."""
    import torch

    from shopee_match.embed.backbones import pick_device
    from shopee_match.embed.specs import sbert_path, sbert_preprocess
    from shopee_match.match.selection import best_static_f1
    from shopee_match.progress import quiet_model_libraries
    from shopee_match.train.length_chunks import forward_by_length

    quiet_model_libraries()
    from sentence_transformers import SentenceTransformer

    base = EncoderSpec.parse(base_spec)
    if base.kind != "sbert":
        raise ValueError(f"text fine-tuning needs an sbert: spec, got {base_spec!r}")
    folder = _folder(config, {"text": base_spec}, fingerprint, split_seed, root)
    if (done := _saved(folder)) is not None:
        return done
    device = device or pick_device()
    model = SentenceTransformer(sbert_path(base.name), device=device)
    model.max_seq_length = config.max_tokens
    titles, labels = [str(t) for t in titles], np.asarray(labels)
    train, val = np.flatnonzero(split == "train"), np.flatnonzero(split == "val")

    preprocess = sbert_preprocess(model)

    def load_batch(rows):
        features = preprocess([titles[i] for i in train[rows]])
        return {name: value.to(device) if isinstance(value, torch.Tensor) else value
                for name, value in features.items()}

    def forward(m, features):  # chunks of titles of similar length: less padding
        return torch.nn.functional.normalize(forward_by_length(
            features, lambda f: m(f)["sentence_embedding"], TEXT_CHUNK), dim=-1)

    def val_f1(m):
        vectors = m.encode([titles[i] for i in val], batch_size=64, convert_to_numpy=True,
                           normalize_embeddings=True, show_progress_bar=False)
        return best_static_f1(vectors.astype(np.float32), labels[val], k)

    history = fit(model, batches_from(load_batch), forward, labels[train], config, val_f1,
                  folder / "checkpoint", device, progress)
    meta = {"kind": "text", "base": base_spec, "config": asdict(config)}
    return FineTuned(_save(folder, model.cpu(), meta, history), folder, history, True)
