"""TF-IDF title vectors: word and character n-grams, fitted on a catalog's own titles."""

from __future__ import annotations

import numpy as np


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
