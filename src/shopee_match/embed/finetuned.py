"""The saved fine-tuned encoder format, and the architectures it saves.

Notebook 04 (:mod:`shopee_match.train.finetune`) trains three kinds of encoder; each is saved
in a folder ``artifacts/models/<key>/`` as a :class:`FineTunedModel`:

- ``head``: a projection (:func:`projection_head`) over frozen embeddings of other
  modalities (``weights.pt``), used through the spec ``finetuned:<folder>``;
- ``image``: an image tower (:func:`image_tower`: the base model's top blocks and a BN neck,
  ``weights.pt``), used through ``finetuned:<folder>``;
- ``text``: a sentence-transformers model (``sbert/``), used through ``sbert:<folder>/sbert``.

``encoder.json`` (kind, what it was made from, its training history) is written last, so its
presence marks a finished model.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from shopee_match.embed.specs import EncoderSpec

META_FILE = "encoder.json"
WEIGHTS_FILE = "weights.pt"


def projection_head(in_dim: int, out_dim: int, hidden: int = 0):
    """Linear projection (or a one-hidden-layer MLP) whose output is L2-normalised."""
    import torch

    class ProjectionHead(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = (torch.nn.Linear(in_dim, out_dim) if hidden <= 0 else torch.nn.Sequential(
                torch.nn.Linear(in_dim, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, out_dim)))

        def forward(self, x):
            return torch.nn.functional.normalize(self.net(x), dim=-1)

    return ProjectionHead()


def image_tower(base_spec: str | EncoderSpec, unfrozen_blocks: int = 2):
    """The base image model with only its top ``unfrozen_blocks`` trainable, plus a new
    pool → BatchNorm → L2 neck. ``base_spec``: ``timm:ARCH:WEIGHTS`` or
    ``open_clip:ARCH:WEIGHTS`` (OpenCLIP's visual tower, via ``lock_image_tower``)."""
    import torch

    spec = EncoderSpec.parse(base_spec)
    if spec.kind == "timm":
        from shopee_match.embed.backbones import load_timm

        trunk = load_timm(spec.name, spec.weights)
        for p in trunk.parameters():
            p.requires_grad = False
        blocks = list(trunk.blocks)[len(trunk.blocks) - unfrozen_blocks:] if unfrozen_blocks else []
        top = [m for m in (getattr(trunk, "conv_head", None), getattr(trunk, "bn2", None)) if m]
        for module in [*blocks, *top]:
            for p in module.parameters():
                p.requires_grad = True
        dim = trunk.num_features
    elif spec.kind == "open_clip":
        from shopee_match.embed.backbones import load_open_clip

        model = load_open_clip(spec.name, spec.weights)[0]
        model.lock_image_tower(unlocked_groups=unfrozen_blocks)
        trunk, dim = model.visual, int(model.visual.output_dim)
    else:
        raise ValueError(f"image fine-tuning needs a timm: or open_clip: spec, got {spec}")

    class ImageTower(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.trunk = trunk
            self.neck = torch.nn.BatchNorm1d(dim)

        def forward(self, x):
            return torch.nn.functional.normalize(self.neck(self.trunk(x).float()), dim=-1)

    return ImageTower()


def read_meta(folder: str | Path) -> dict | None:
    """``encoder.json`` of a finished fine-tuned model, or None if there is none."""
    path = Path(folder) / META_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def spec_of(folder: str | Path) -> str:
    """Encoder spec of a saved fine-tuned model folder."""
    meta = read_meta(folder)
    if meta is None:
        raise FileNotFoundError(f"{folder} holds no finished fine-tuned model (no {META_FILE})")
    return f"sbert:{Path(folder) / 'sbert'}" if meta["kind"] == "text" else f"finetuned:{folder}"


class FineTunedModel:
    """A fine-tuned encoder and its ``meta`` (``kind``: head, image or text; what it was made
    from; for heads their input modalities and sizes; the training history)."""

    def __init__(self, model, meta: dict):
        self.model, self.meta = model, meta

    @property
    def kind(self) -> str:
        return self.meta["kind"]

    def save(self, folder: str | Path) -> str:
        """Write the weights, then ``encoder.json``; returns the encoder spec that loads it."""
        import torch

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.kind == "text":
            self.model.save(str(folder / "sbert"))
        else:
            torch.save(self.model.state_dict(), folder / WEIGHTS_FILE)
        (folder / META_FILE).write_text(json.dumps(self.meta, indent=2))
        return spec_of(folder)

    @classmethod
    def load(cls, folder: str | Path, device: str = "cpu") -> FineTunedModel:
        """A saved ``head`` or ``image`` model, in eval mode (a ``text`` one loads through its
        ``sbert:`` spec)."""
        import torch

        meta = read_meta(folder)
        if meta is None:
            raise FileNotFoundError(f"{folder}/{META_FILE} not found: not a finished "
                                    "fine-tuned model; run notebook 04 again to train it.")
        if meta["kind"] == "head":
            model = projection_head(meta["in_dim"], meta["out_dim"], meta["hidden"])
        elif meta["kind"] == "image":
            model = image_tower(meta["base"], meta["unfrozen_blocks"])
        else:
            raise ValueError(f"{folder}: kind {meta['kind']!r} loads through sbert:, not "
                             "finetuned:")
        state = torch.load(Path(folder) / WEIGHTS_FILE, map_location=device)
        model.load_state_dict(state)
        return cls(model.to(device).eval(), meta)

    def head_vectors(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Joint embeddings of a ``head`` from its input modalities' vectors (a row with no
        input at all stays a zero row)."""
        import torch

        x = np.concatenate([inputs[m] for m in self.meta["inputs"]], axis=1).astype(np.float32)
        with torch.inference_mode():
            out = self.model(torch.from_numpy(x)).numpy()
        out[~np.any(x != 0, axis=1)] = 0.0
        return out.astype(np.float32)
