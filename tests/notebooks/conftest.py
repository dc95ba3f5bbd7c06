"""Notebook tests share one embedding cache (its entries are keyed by data, model and
parameters): each notebook sequence embeds demo-tiny once per session, not once per test.
A test that needs a cold cache points ``SHOPEE_MATCH_EMBEDDINGS`` elsewhere itself."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def _shared_embeddings(tmp_path_factory):
    return tmp_path_factory.mktemp("shared_embeddings")


@pytest.fixture(autouse=True)
def _embedding_cache(_shared_embeddings, monkeypatch):
    monkeypatch.setenv("SHOPEE_MATCH_EMBEDDINGS", str(_shared_embeddings))
