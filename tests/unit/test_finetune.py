"""P×K fine-tuning: sampler invariants, schedules, losses, the loop, models as encoders."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from shopee_match.train.finetune import (
    PKSampler,
    TrainConfig,
    arcface_margin,
    batches_from,
    fit,
    lr_factor,
    make_loss,
    train_head,
)

# groups: 0 has 5 listings, 1..6 have 3, 7 has 2, 8 and 9 are lone listings
LABELS = np.array([0] * 5 + [g for g in range(1, 7) for _ in range(3)] + [7, 7, 8, 9])


def test_every_batch_holds_p_distinct_groups_times_k():
    sampler = PKSampler(LABELS, p=3, k=4, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == math.ceil(8 / 3)  # 8 groups have 2+ listings
    for batch in batches:
        assert len(batch) == 3 * 4 and all(0 <= i < len(LABELS) for i in batch)
        groups, counts = np.unique(LABELS[batch], return_counts=True)
        assert len(groups) == 3 and (counts == 4).all()


def test_an_epoch_visits_every_group_with_a_partner_and_never_lone_listings():
    sampler = PKSampler(LABELS, p=3, k=2, seed=0)
    seen = set(LABELS[[i for b in sampler for i in b]])
    assert seen == set(range(8))  # groups 8 and 9 have no positive: never sampled


def test_small_groups_give_all_members_then_repeats():
    sampler = PKSampler(LABELS, p=8, k=4, seed=0)
    [batch] = list(sampler)
    pair = [i for i in batch if LABELS[i] == 7]
    assert len(pair) == 4 and set(pair) == {23, 24}  # both listings, then repeats
    big = [i for i in batch if LABELS[i] == 0]
    assert len(set(big)) == 4  # no repeats where the group is large enough


def test_batches_are_seeded_and_change_with_the_epoch():
    a, b = PKSampler(LABELS, 3, 2, seed=5), PKSampler(LABELS, 3, 2, seed=5)
    assert list(a) == list(b)
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first
    assert list(PKSampler(LABELS, 3, 2, seed=6)) != first


def test_impossible_pk_fails_fast_with_a_clear_message():
    with pytest.raises(ValueError, match="P=9 needs at least 9 label groups with 2\\+ listings, "
                                         "but the training data has 8"):
        PKSampler(LABELS, p=9, k=2)
    with pytest.raises(ValueError, match="K >= 2"):
        PKSampler(LABELS, p=2, k=1)


def test_learning_rate_warms_up_then_follows_a_cosine():
    total = 100
    factors = [lr_factor(s, total, 0.1) for s in range(total)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[-1] < 0.01
    assert all(x >= y for x, y in zip(factors[10:], factors[11:]))
    assert lr_factor(55, 100, 0.1) == pytest.approx(0.5, abs=1e-9)  # half-way through cosine


def test_arcface_margin_ramps_and_is_stored_in_radians():
    assert arcface_margin(0, 5, (0.2, 0.8)) == 0.2
    assert arcface_margin(4, 5, (0.2, 0.8)) == pytest.approx(0.8)
    assert arcface_margin(0, 1, (0.2, 0.8)) == 0.2
    loss, miner = make_loss("arcface", 10, 8, TrainConfig(margin=(0.3, 0.9)))
    assert miner is None and loss.margin == pytest.approx(0.3)  # PML took 17.2 degrees
    assert sum(p.numel() for p in loss.parameters()) == 10 * 8  # trainable class centres
    subcenter, _ = make_loss("subcenter_arcface", 10, 8, TrainConfig(margin=(0.3, 0.9)))
    assert subcenter.margin == pytest.approx(0.3)
    assert sum(p.numel() for p in subcenter.parameters()) == 10 * 3 * 8  # 3 centres per class
    with pytest.raises(ValueError, match="Unknown loss"):
        TrainConfig(loss="contrastive-ish")


def test_the_triplet_loss_learns_from_exactly_the_semi_hard_triplets():
    """The miner keeps (anchor, positive, negative) with 0 < d(a, n) - d(a, p) <= margin."""
    import torch

    loss, miner = make_loss("triplet", 2, 2, TrainConfig())
    angles = torch.tensor([0.0, 0.05, 0.12, 1.5])
    emb = torch.stack([angles.cos(), angles.sin()], dim=1)
    labels = torch.tensor([0, 0, 1, 1])
    mined = miner(emb, labels)
    got = set(zip(*(t.tolist() for t in mined)))
    d = torch.cdist(emb, emb)
    want = {(a, p, n) for a in range(4) for p in range(4) for n in range(4)
            if a != p and labels[a] == labels[p] != labels[n]
            and 0 < d[a, n] - d[a, p] <= 0.1}
    assert want == {(0, 1, 2), (1, 0, 2), (3, 2, 0), (3, 2, 1)}  # by hand, from the angles
    assert got == want
    expected = torch.stack([d[a, p] - d[a, n] + 0.1 for a, p, n in sorted(want)]).mean()
    assert float(loss(emb, labels, mined)) == pytest.approx(float(expected), rel=1e-5)


def noisy_groups(n_groups=40, per_group=4, dim=24, seed=0):
    """Group centres hidden in a few dimensions under strong shared noise: a linear
    projection can learn to ignore the noise, the raw cosine cannot."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(n_groups), per_group)
    signal = rng.normal(size=(n_groups, 4))[labels] + 0.2 * rng.normal(size=(len(labels), 4))
    noise = 3.0 * rng.normal(size=(len(labels), dim - 4))
    x = np.concatenate([signal, noise], axis=1).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x, labels


@pytest.mark.parametrize("loss", ["supcon", "arcface", "triplet"])
def test_a_projection_head_learns_what_the_raw_cosine_misses(loss, tmp_path):
    from shopee_match.data.splits import split_by_group
    from shopee_match.match.selection import best_static_f1

    x, labels = noisy_groups()
    split = split_by_group(labels, seed=0)
    config = TrainConfig(regime="head", loss=loss, p=8, k=4, epochs=40, lr=3e-2, out_dim=16)
    result = train_head({"image": x}, labels, split, config, {"image": "timm:x:none"}, 64,
                        "fp", 0, k=10, root=tmp_path, device="cpu", progress=False)
    history = result.history
    val = split == "val"
    before = best_static_f1(x[val], labels[val], 10)
    assert history.best_val_f1 == max(e["val_f1"] for e in history.epochs)
    assert history.best_val_f1 > before + 0.1, (before, history.epochs)


def test_training_the_same_thing_twice_loads_the_saved_model(tmp_path):
    x, labels = noisy_groups(seed=1)
    split = np.where(np.arange(len(labels)) % 8 < 6, "train", "val")
    split[labels % 5 == 0] = "val"
    split[labels % 5 != 0] = "train"
    args = ({"image": x}, labels, split, TrainConfig(p=4, k=2, epochs=2, out_dim=8),
            {"image": "timm:x:none"}, 64, "fp", 0)
    first = train_head(*args, k=5, root=tmp_path, device="cpu", progress=False)
    again = train_head(*args, k=5, root=tmp_path, device="cpu", progress=False)
    assert first.trained and not again.trained
    assert again.spec == first.spec and again.history.epochs == first.history.epochs
    assert not (first.folder / "checkpoint").exists()  # a finished model keeps no resume state
    other = train_head(*args[:3], TrainConfig(p=4, k=2, epochs=2, out_dim=8, seed=1), *args[4:],
                       k=5, root=tmp_path, device="cpu", progress=False)
    assert other.trained and other.folder != first.folder  # another seed is another model


def test_an_interrupted_run_resumes_from_its_checkpoint(tmp_path):
    import torch

    from shopee_match.embed.finetuned import projection_head

    x, labels = noisy_groups(seed=2)
    config = TrainConfig(p=4, k=2, epochs=3, out_dim=8)
    inputs = torch.from_numpy(x)
    calls = []

    def crash_in_epoch_2(model):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return 0.5

    def args(model, val):
        return (model, batches_from(lambda rows: inputs[rows]), lambda m, b: m(b), labels,
                config, val, tmp_path / "ckpt", "cpu", False)

    with pytest.raises(KeyboardInterrupt):
        fit(*args(projection_head(24, 8), crash_in_epoch_2))
    resumed = fit(*args(projection_head(24, 8), lambda m: 0.6))
    assert [e["epoch"] for e in resumed.epochs] == [1, 2, 3]  # epoch 1 from the checkpoint
    assert [e["val_f1"] for e in resumed.epochs] == [0.5, 0.6, 0.6]
    assert resumed.best_epoch == 1


@pytest.fixture
def tiny(tiny_env):
    from shopee_match.data.datasets import dataset_fingerprint, load_dataset
    from shopee_match.data.splits import split_by_group

    postings, _ = load_dataset("demo-tiny", "train")
    labels = postings["label_group"].to_numpy()
    return postings, labels, split_by_group(labels, seed=0), dataset_fingerprint(postings)


def test_a_fine_tuned_image_tower_is_an_encoder_spec(tiny):
    import torch

    from shopee_match.embed.backbones import image_transform
    from shopee_match.embed.embeddings import embed_dataset
    from shopee_match.embed.encoders import ImageFiles, make_encoder
    from shopee_match.embed.finetuned import FineTunedModel
    from shopee_match.train.finetune import train_image

    postings, labels, split, fp = tiny
    config = TrainConfig(regime="image", p=4, k=2, epochs=1, image_size=32, unfrozen_blocks=1)
    result = train_image(postings["image_path"].tolist(), labels, split, config,
                         "timm:tf_efficientnet_lite0:none", fp, 0, k=5, device="cpu",
                         progress=False)
    assert result.spec.startswith("finetuned:") and result.history.epochs[0]["per_second"] > 0
    first = embed_dataset(postings, {"image_ft": result.spec}, progress=False)["image_ft"]
    again = embed_dataset(postings, {"image_ft": result.spec}, progress=False)["image_ft"]
    assert first.vectors.shape == (len(postings), 1280) and not first.from_cache
    assert again.from_cache and np.array_equal(again.vectors, first.vectors)
    tower = FineTunedModel.load(result.folder)
    model = tower.model
    x, ok = ImageFiles(postings["image_path"][:1], image_transform(tower.meta["base"], 32),
                       32)[0]
    with torch.no_grad():
        direct = model(x[None]).numpy()[0]
    assert ok and np.allclose(first.vectors[0], direct, atol=1e-5)
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any(n.startswith("trunk.blocks.0") for n in frozen)
    paths = postings["image_path"].head(24).tolist()  # the ONNX engine gives the same vectors
    by_torch, by_onnx = (make_encoder(result.spec, "image", device="cpu", engine=e).encode(paths)
                         for e in ("torch", "onnx"))
    np.testing.assert_allclose(by_onnx[0], by_torch[0], atol=1e-4, rtol=0)
    assert not any(n.startswith("trunk.blocks.6") for n in frozen)


def test_a_projection_head_embeds_through_its_inputs(tiny):
    from shopee_match.embed.embeddings import embed_dataset
    from shopee_match.embed.finetuned import FineTunedModel

    postings, labels, split, fp = tiny
    base = {"image": "timm:tf_efficientnet_lite0:pypi", "text": "sbert:pypi-minilm"}
    frozen = embed_dataset(postings, base, image_size=64, progress=False)
    vectors = {m: frozen[m].vectors for m in base}
    result = train_head(vectors, labels, split, TrainConfig(p=4, k=2, epochs=2, out_dim=32),
                        base, 64, fp, 0, k=5, device="cpu", progress=False)
    joint = embed_dataset(postings, {"joint": result.spec}, progress=False)["joint"]
    assert joint.vectors.shape == (len(postings), 32)
    head = FineTunedModel.load(result.folder)
    assert head.kind == "head" and head.meta["inputs"] == base
    assert np.allclose(joint.vectors, head.head_vectors(vectors), atol=1e-6)
    assert np.allclose(np.linalg.norm(joint.vectors, axis=1), 1.0, atol=1e-5)
    assert head.meta["int8"] is False


def test_a_head_trained_on_int8_titles_embeds_its_inputs_as_int8(tiny):
    from shopee_match.embed.embeddings import embed_dataset
    from shopee_match.embed.finetuned import FineTunedModel

    postings, labels, split, fp = tiny
    base = {"text": "sbert:pypi-minilm"}
    fp32, int8 = (embed_dataset(postings, base, modalities=["text"], int8=q,
                                progress=False)["text"].vectors for q in (False, True))
    args = (labels, split, TrainConfig(p=4, k=2, epochs=1, out_dim=16), base, 64, fp, 0)
    on_int8 = train_head({"text": int8}, *args, k=5, device="cpu", progress=False, int8=True)
    on_fp32 = train_head({"text": fp32}, *args, k=5, device="cpu", progress=False)
    assert on_int8.folder != on_fp32.folder  # trained on other inputs: another model
    for result, inputs in ((on_int8, int8), (on_fp32, fp32)):
        head = FineTunedModel.load(result.folder)
        joint = embed_dataset(postings, {"joint": result.spec}, progress=False)["joint"]
        np.testing.assert_allclose(joint.vectors, head.head_vectors({"text": inputs}),
                                   atol=1e-6)


def test_a_fine_tuned_title_model_travels_inside_its_candidate(tiny, tmp_path):
    import shutil

    from shopee_match.apply.candidates import load_candidate, save_candidate
    from shopee_match.embed.embeddings import embed_dataset
    from shopee_match.match.config import MatchConfig
    from shopee_match.train.finetune import train_text

    postings, labels, split, fp = tiny
    result = train_text(postings["title"].tolist(), labels, split,
                        TrainConfig(regime="text", p=4, k=2, epochs=1, lr=5e-5, max_tokens=16),
                        "sbert:pypi-minilm", fp, 0, k=5, device="cpu", progress=False)
    assert result.spec.startswith("sbert:") and result.spec.endswith("/sbert")
    tuned = embed_dataset(postings, {"text_ft": result.spec}, progress=False)["text_ft"]
    base = embed_dataset(postings, {"text": "sbert:pypi-minilm"}, progress=False)["text"]
    assert tuned.model_id != base.model_id and not np.allclose(tuned.vectors, base.vectors)
    config = MatchConfig(encoders={"text_ft": result.spec}, fusion_weights={"text_ft": 1.0},
                         value=0.5, models={"text_ft": tuned.model_id})
    saved = save_candidate("04_finetuned", config, 0.9, 0.8, dataset="demo-tiny",
                           fingerprint=fp, split_seed=0, notebook="test", root=tmp_path / "c")
    key = result.folder.name
    assert (saved.folder / "models" / key / "sbert").is_dir()
    stored = (saved.folder / "candidate.json").read_text()
    assert f"sbert:./models/{key}/sbert" in stored  # relative: the folder can move
    moved = tmp_path / "elsewhere"
    shutil.copytree(saved.folder, moved)
    shutil.rmtree(result.folder)  # the original artifacts/models copy is gone
    candidate = load_candidate(moved)
    assert candidate.config.encoders["text_ft"] == f"sbert:{moved / 'models' / key / 'sbert'}"
    again = embed_dataset(postings, candidate.config.encoders, modalities=["text_ft"],
                          progress=False)["text_ft"]
    assert again.model_id == tuned.model_id and again.from_cache  # same weights, same key
    assert np.array_equal(again.vectors, tuned.vectors)


def test_a_candidate_built_on_another_candidates_encoders_carries_them_too(tiny, tmp_path):
    """As notebook 05 blocks with 04's candidate: the new candidate copies the encoder it uses
    from the other candidate's folder, so both can move (no absolute path stays)."""
    import shutil

    from shopee_match.apply.candidates import leaderboard, load_candidate, save_candidate
    from shopee_match.data.paths import artifacts_dir
    from shopee_match.embed.embeddings import embed_dataset
    from shopee_match.match.config import MatchConfig
    from shopee_match.train.finetune import train_text

    postings, labels, split, fp = tiny
    result = train_text(postings["title"].tolist(), labels, split,
                        TrainConfig(regime="text", p=4, k=2, epochs=1, lr=5e-5, max_tokens=16),
                        "sbert:pypi-minilm", fp, 0, k=5, device="cpu", progress=False)
    config = MatchConfig(encoders={"text_ft": result.spec}, fusion_weights={"text_ft": 1.0},
                         value=0.5)
    first = save_candidate("04_finetuned", config, 0.9, 0.8, dataset="demo-tiny",
                           fingerprint=fp, split_seed=0, notebook="test")
    blocked = first.config  # absolute paths into 04's folder, as 05 reads them
    assert str(first.folder) in blocked.encoders["text_ft"]
    second = save_candidate("05_rerank", blocked.replace(value=0.6), 0.95, 0.85,
                            dataset="demo-tiny", fingerprint=fp, split_seed=0, notebook="test")
    stored = json.loads((second.folder / "candidate.json").read_text())
    key = result.folder.name
    assert stored["config"]["encoders"]["text_ft"] == f"sbert:./models/{key}/sbert"
    moved = tmp_path / "moved"
    shutil.move(artifacts_dir(), moved)
    board = leaderboard(fp, 0, root=moved / "candidates")
    assert board["usable"].all(), board
    candidate = load_candidate(moved / "candidates" / "05_rerank")
    assert not candidate.missing_encoders()
    vectors = embed_dataset(postings, candidate.config.encoders, modalities=["text_ft"],
                            progress=False)["text_ft"]
    assert vectors.vectors.shape == (len(postings), 384)
    assert vectors.model_id.startswith(f"sbert:{key}/sbert:")  # the same weights, by name


def test_openclip_visual_tower_trains_only_its_unlocked_groups():
    import torch

    from shopee_match.embed.finetuned import image_tower

    model = image_tower("open_clip:ViT-B-32:none", unfrozen_blocks=1)
    out = model(torch.randn(2, 3, 224, 224))
    assert out.shape == (2, 512) and torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    out.sum().backward()
    trained = {n for n, p in model.named_parameters() if p.grad is not None}
    assert "neck.weight" in trained
    assert not any("transformer.resblocks.0." in n for n in trained)


def test_training_is_reproducible_whatever_ran_before(tmp_path):
    import random

    import torch

    x, labels = noisy_groups(seed=3)
    split = np.where(labels % 4 == 0, "val", "train")
    results = []
    for noise in (1, 2):  # other code consumed the global random streams differently
        torch.manual_seed(noise)
        random.seed(noise)
        results.append(train_head({"image": x}, labels, split,
                                  TrainConfig(p=4, k=2, epochs=2, out_dim=8), {"image": "a"}, 64,
                                  "fp", 0, k=5, root=tmp_path / str(noise), device="cpu",
                                  progress=False))
    assert results[0].history.epochs[-1]["loss"] == results[1].history.epochs[-1]["loss"]


def test_image_training_repeats_whatever_ran_before(tiny, tmp_path):
    import random

    import torch

    from shopee_match.train.finetune import train_image

    postings, labels, split, fp = tiny
    config = TrainConfig(regime="image", p=4, k=2, epochs=1, image_size=32, unfrozen_blocks=1)
    losses = []
    for noise in (1, 2):
        torch.manual_seed(noise)
        random.seed(noise)
        result = train_image(postings["image_path"].tolist(), labels, split, config,
                             "timm:tf_efficientnet_lite0:none", fp, 0, k=5,
                             root=tmp_path / str(noise), device="cpu", progress=False)
        losses.append(result.history.epochs[0]["loss"])
    assert losses[0] == losses[1]


def test_p_is_lowered_to_the_groups_a_small_dataset_has():
    from shopee_match.train.finetune import usable_p

    labels = [1, 1, 2, 2, 3, 3, 4]  # three groups with a partner
    assert usable_p(labels, 32) == 3 and usable_p(labels, 2) == 2
    with pytest.raises(ValueError, match="at least 2 label groups with 2\\+ listings.*has 1"):
        usable_p([1, 1, 2, 3], 8)


def test_max_batches_caps_an_epoch_with_other_groups_each_epoch():
    sampler = PKSampler(LABELS, p=2, k=2, seed=0, max_batches=2)
    first = list(sampler)
    assert len(first) == len(sampler) == 2  # 4 batches without the cap
    assert len(list(PKSampler(LABELS, p=2, k=2, seed=0))) == 4
    assert first == list(PKSampler(LABELS, p=2, k=2, seed=0))[:2]  # a prefix of the epoch
    sampler.set_epoch(1)
    assert list(sampler) != first
    assert len(list(PKSampler(LABELS, p=2, k=2, seed=0, max_batches=99))) == 4
    with pytest.raises(ValueError, match="max_batches"):
        TrainConfig(max_batches=-1)


def test_training_runs_with_deterministic_algorithms_and_restores_the_setting():
    import torch

    from shopee_match.embed.finetuned import projection_head

    x, labels = noisy_groups(n_groups=10)
    seen = []

    def forward(model, inputs):
        seen.append(torch.are_deterministic_algorithms_enabled())
        return model(inputs)

    before = torch.are_deterministic_algorithms_enabled()
    rows = np.flatnonzero(np.ones(len(labels), bool))
    fit(projection_head(24, 8), batches_from(lambda r: torch.from_numpy(x[rows[r]])), forward,
        labels, TrainConfig(p=4, k=2, epochs=1), lambda m: 0.5, progress=False)
    assert seen and all(seen)  # every batch
    assert torch.are_deterministic_algorithms_enabled() == before
