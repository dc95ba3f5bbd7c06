"""Length-chunked forward passes: the same outputs and gradients as the padded batch."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def padded_batch(lengths, width=None, left=False):
    """Token ids 1..n per row, padded with 0 to ``width`` (right, or left)."""
    width = width or max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        cols = slice(width - n, width) if left else slice(0, n)
        ids[row, cols] = torch.arange(1, n + 1) + 10 * row
        mask[row, cols] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids),
            "prompt": "kept as it is"}


class MaskedMean(torch.nn.Module):
    """A toy encoder: the masked mean of token embeddings; records the widths it ran on."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = torch.nn.Embedding(400, 5)
        self.widths = []

    def forward(self, features):
        assert features["prompt"] == "kept as it is"
        assert features["token_type_ids"].shape == features["input_ids"].shape
        self.widths.append(features["input_ids"].shape[1])
        mask = features["attention_mask"].unsqueeze(-1).float()
        return (self.embedding(features["input_ids"]) * mask).sum(1) / mask.sum(1)


LENGTHS = [3, 17, 5, 9, 2, 17, 11, 4, 6, 1, 8, 12]


def test_chunks_give_the_whole_batchs_outputs_in_its_order_from_fewer_tokens():
    from shopee_match.train.length_chunks import forward_by_length

    model, features = MaskedMean(), padded_batch(LENGTHS)
    whole = model(features)
    model.widths.clear()
    chunked = forward_by_length(features, model, rows=4)
    torch.testing.assert_close(chunked, whole)
    # sorted lengths 1 2 3 4 | 5 6 8 9 | 11 12 17 17: each chunk cut to its longest row
    assert model.widths == [4, 9, 17]


def test_gradients_through_the_chunks_equal_the_whole_batchs():
    from shopee_match.train.length_chunks import forward_by_length

    features = padded_batch(LENGTHS)
    weights = torch.linspace(-1, 1, len(LENGTHS))[:, None]
    grads = []
    for run in (lambda m: m(features), lambda m: forward_by_length(features, m, rows=5)):
        model = MaskedMean()
        (run(model) * weights).sum().backward()
        grads.append(model.embedding.weight.grad)
    torch.testing.assert_close(grads[1], grads[0])


@pytest.mark.parametrize("features, rows", [(padded_batch(LENGTHS, left=True), 4),
                                            (padded_batch(LENGTHS), len(LENGTHS))])
def test_left_padded_or_small_batches_run_whole(features, rows):
    from shopee_match.train.length_chunks import forward_by_length

    model = MaskedMean()
    out = forward_by_length(features, model, rows=rows)
    assert model.widths == [17]
    torch.testing.assert_close(out, MaskedMean()(features))
