"""The typed matcher configuration: everything needed to turn listings into match sets.

A :class:`MatchConfig` names the encoder of every modality (a pretrained spec or a
fine-tuned checkpoint: both are encoder specs; ``int8`` when its title models ran as
int8 graphs), how the dense modalities are
fused, how many neighbours are considered, and the rule that accepts
neighbours: a threshold strategy (with min-2, union, blending, connected
components) or a second stage that scores candidate pairs. It is validated on
construction and round-trips through JSON (:meth:`MatchConfig.to_dict`,
:meth:`MatchConfig.from_dict`); :func:`shopee_match.match.decision.predict_matches`
applies it.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any

from shopee_match.match.components import MAX_COMPONENT
from shopee_match.match.thresholds import STRATEGIES

#: kinds of second stage (:mod:`shopee_match.match.second_stage`): a classifier over pair
#: features, a cross-encoder alone, or a classifier over the pair features plus the
#: cross-encoder's probability (``rerank``; see :mod:`shopee_match.apply.second_stages`)
SECOND_STAGES = ("pair_classifier", "cross_encoder", "rerank")
#: modalities with sparse vectors: usable in ``union`` and as pair features, not in the fusion
SPARSE_MODALITIES = ("tfidf",)
#: keys of the flat dict that notebook 03 saved before MatchConfig existed
_LEGACY_KEYS = {"profile", "pair_threshold", "pair_model", "chosen_on"}


class MatchConfigError(ValueError):
    """A matcher configuration is incomplete or inconsistent; the message says what to fix."""


@dataclass(frozen=True)
class SecondStage:
    """A pair scorer applied to every candidate pair; pairs scoring ``>= threshold`` match.

    ``file`` is the fitted model's file (or folder, for the cross-encoder kinds) inside the
    candidate folder that holds it.
    """

    kind: str
    threshold: float
    file: str

    def __post_init__(self):
        if self.kind not in SECOND_STAGES:
            raise MatchConfigError(f"Unknown second stage {self.kind!r}; known: {SECOND_STAGES}.")
        _check_number("second_stage.threshold", self.threshold)
        object.__setattr__(self, "threshold", float(self.threshold))
        if not 0.0 <= self.threshold <= 1.0:
            raise MatchConfigError(f"second_stage.threshold is {self.threshold}; the second "
                                   "stages score probabilities, between 0 and 1.")
        if not isinstance(self.file, str):
            raise MatchConfigError("second_stage.file must name the fitted model's file.")
        if not self.file:
            raise MatchConfigError("second_stage.file must name the fitted model's file.")


@dataclass(frozen=True)
class MatchConfig:
    """How to match listings; see the module docstring. Build variants with :meth:`replace`."""

    encoders: dict[str, str]  # modality -> encoder spec (``tfidf`` -> "tfidf")
    fusion_weights: dict[str, float]  # dense modalities fused into one vector
    k: int = 50  # neighbours considered per listing
    image_size: int = 224  # input side of the image encoder
    blend_rounds: int = 0  # neighbourhood-blending rounds on the fused vectors
    blend_top_n: int = 3  # neighbours mixed into each vector per round
    strategy: str = "static"  # threshold strategy (see thresholds.STRATEGIES)
    value: float | None = None  # threshold / multiplier / quantile of the strategy
    min2: float | None = None  # loose threshold for a lonely listing's nearest neighbour
    union: dict[str, float] = field(default_factory=dict)  # modality -> own static threshold
    components: bool = False  # close matches transitively (connected components)
    max_component: int = MAX_COMPONENT  # components cut at their weakest edges above this
    second_stage: SecondStage | None = None  # pair scorer instead of the threshold rule
    models: dict[str, str] = field(default_factory=dict)  # modality -> model id when tuned
    int8: bool = False  # title models run as int8 (quantized ONNX) graphs, as when tuned

    def __post_init__(self):
        if not isinstance(self.encoders, dict) or not self.encoders:
            raise MatchConfigError("encoders must map each modality to an encoder spec.")
        if not isinstance(self.fusion_weights, dict) or not self.fusion_weights:
            raise MatchConfigError("fusion_weights must name at least one modality.")
        self._as_floats()
        for name, weight in self.fusion_weights.items():
            if weight < 0:
                raise MatchConfigError(f"fusion_weights[{name!r}] is negative ({weight}).")
        if not any(self.fusion_weights.values()):
            raise MatchConfigError("all fusion_weights are zero.")
        sparse = set(self.fusion_weights) & set(SPARSE_MODALITIES)
        if sparse and len(self.fusion_weights) > 1:
            raise MatchConfigError(f"{sorted(sparse)} is sparse and cannot be fused with other "
                                   "modalities; use it in union or the pair classifier.")
        used = {*self.fusion_weights, *self.union, *self.models}
        missing = sorted(used - set(self.encoders))
        if missing:
            raise MatchConfigError(f"no encoder spec for modality {missing}; encoders has "
                                   f"{sorted(self.encoders)}.")
        for name, minimum in (("k", 1), ("image_size", 16), ("blend_rounds", 0),
                              ("blend_top_n", 1), ("max_component", 2)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise MatchConfigError(f"{name} must be an integer >= {minimum}, got {value!r}.")
        if self.strategy not in STRATEGIES:
            raise MatchConfigError(f"Unknown threshold strategy {self.strategy!r}; known: "
                                   f"{sorted(STRATEGIES)}.")
        if self.second_stage is None and self.value is None:
            raise MatchConfigError(f"value (the {self.strategy} threshold) is missing; it is "
                                   "needed when there is no second stage.")
        if sparse and self.blend_rounds:
            raise MatchConfigError("neighbourhood blending needs dense vectors, not "
                                   f"{sorted(sparse)}; set blend_rounds to 0.")
        if not isinstance(self.int8, bool):
            raise MatchConfigError(f"int8 must be true or false, got {self.int8!r}.")
        if self.second_stage is not None and not isinstance(self.second_stage, SecondStage):
            raise MatchConfigError("second_stage must be a SecondStage (or None).")
        self._check_ranges()

    def _check_ranges(self) -> None:
        """Thresholds where they can mean something: cosine similarities lie in [-1, 1], a
        quantile in [0, 1] (a typo such as a threshold of 7.5 is an error, not a matcher
        that never matches). A union threshold is left free: notebook 03's grid raises each
        modality's own threshold, and one above 1 just adds nothing."""
        cosine = [("min2", self.min2)]
        if self.strategy == "static":
            cosine.append(("value (a static threshold)", self.value))
        for name, value in cosine:
            if value is not None and not -1.0 <= value <= 1.0:
                raise MatchConfigError(f"{name} is {value}; a cosine similarity threshold "
                                       "lies between -1 and 1.")
        if self.strategy == "quantile" and self.value is not None and not 0 <= self.value <= 1:
            raise MatchConfigError(f"value is {self.value}; a quantile lies between 0 and 1.")

    def _as_floats(self) -> None:
        """Check every number and store it as a plain float (numpy scalars -> JSON-able)."""
        for name in ("value", "min2"):
            value = getattr(self, name)
            if value is not None:
                _check_number(name, value)
                object.__setattr__(self, name, float(value))
        for name in ("fusion_weights", "union"):
            table = getattr(self, name)
            if not isinstance(table, dict):
                raise MatchConfigError(f"{name} must map modality names to numbers.")
            for key, value in table.items():
                _check_number(f"{name}[{key!r}]", value)
            object.__setattr__(self, name, {str(k): float(v) for k, v in table.items()})

    def replace(self, **changes) -> MatchConfig:
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)

    @property
    def modalities(self) -> list[str]:
        """Modalities whose vectors :func:`predict_matches` needs (all of them for a second
        stage, whose pair features use every modality)."""
        if self.second_stage is not None:
            return sorted(self.encoders)
        return sorted({*self.fusion_weights, *self.union})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict (:meth:`from_dict` reads it back)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "configuration") -> MatchConfig:
        """Build from :meth:`to_dict` output; unknown or legacy keys give a clear error."""
        if not isinstance(data, dict):
            raise MatchConfigError(f"{source}: expected a JSON object, got {type(data).__name__}.")
        if _LEGACY_KEYS & set(data) and "encoders" not in data:
            raise MatchConfigError(
                f"{source} was saved by an older notebook 03 (a loose dict with 'profile' and "
                "'chosen_on'); re-run notebooks/03_threshold_f1_sweep.ipynb (or `shopee-match "
                "report --only 03`) to save it as candidate 03_thresholds.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MatchConfigError(f"{source}: unknown key(s) {unknown}; a MatchConfig has "
                                   f"{sorted(known)}.")
        missing = sorted({"encoders", "fusion_weights"} - set(data))
        if missing:
            raise MatchConfigError(f"{source}: missing key(s) {missing}.")
        data = dict(data)
        stage = data.get("second_stage")
        if stage is not None:
            if not isinstance(stage, dict) or set(stage) != {"kind", "threshold", "file"}:
                raise MatchConfigError(f"{source}: second_stage needs exactly kind, threshold "
                                       f"and file; got {stage!r}.")
            data["second_stage"] = SecondStage(**stage)
        return cls(**data)


def _check_number(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise MatchConfigError(f"{name} must be a finite number, got {value!r}.")
