"""A cross-encoder: one model reads two titles together and gives the probability that they
name the same product. Trained by :mod:`shopee_match.train.cross_encoder`; run in torch or as
an exported ONNX graph in onnxruntime (``engine``, :mod:`shopee_match.embed.engines`)."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: pairs per forward pass on torch (a GPU, or a CPU without onnxruntime)
TORCH_BATCH = 64


class CrossEncoderModel:
    """A sentence-transformers ``CrossEncoder`` saved in ``folder``, with cached scoring of
    title pairs. ``pairs_per_second`` is the speed of the last scoring call.

    On onnxruntime every pair runs alone, a run per core at once: a pair scores the same in
    any batch, and a CPU scores more pairs/s than in batches (``benchmarks/bench_embed.py``;
    int8 graphs need it: :data:`shopee_match.embed.engines.INT8_BATCH`). ``int8`` scores with
    the dynamically quantized ONNX graph (onnxruntime on the CPU, also on a machine with a
    GPU), so a candidate tuned with it scores a pair the same everywhere. torch (a GPU), or
    fp32 onnxruntime given a ``batch_size``, scores in batches of it (torch: 64 by
    default)."""

    def __init__(self, folder: str | Path, device: str | None = None, engine: str = "auto",
                 batch_size: int | None = None, int8: bool = False):
        from shopee_match.embed.engines import INT8_BATCH, resolve_engine
        from shopee_match.progress import quiet_model_libraries

        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        quiet_model_libraries()
        from sentence_transformers.cross_encoder import CrossEncoder

        self.folder = Path(folder)
        self.int8 = int8
        self.model = CrossEncoder(str(self.folder), device="cpu" if int8 else device)
        self.engine = resolve_engine("onnx" if int8 else engine, self.model.device.type)
        if int8 and self.engine != "onnx":
            raise RuntimeError("an int8 cross-encoder runs on onnxruntime, which is not "
                               "installed: `pip install onnxruntime`")
        if int8:
            self.batch_size = INT8_BATCH
        elif batch_size is None:  # fp32: alone for speed on onnxruntime, batches on torch
            self.batch_size = 1 if self.engine == "onnx" else TORCH_BATCH
        else:
            self.batch_size = batch_size
        self.pairs_per_second = float("nan")
        self._graph = None  # the exported ONNX graph and its input names, once needed

    @property
    def cache_key(self) -> tuple:
        """Where :meth:`pair_scores` keeps its scores in a gallery's cache (int8 apart)."""
        return "cross_encoder", str(self.folder), self.int8

    def save(self, folder: str | Path) -> Path:
        """Write the model to ``folder`` (loaded back by ``CrossEncoderModel(folder)``)."""
        self.model.save(str(folder))
        return Path(folder)

    def score_titles(self, first: Sequence[str], second: Sequence[str], progress: bool = False
                     ) -> np.ndarray:
        """Match probability of each title pair ``(first[t], second[t])``, in that order."""
        from shopee_match.progress import progress_bar

        pairs = list(zip(map(str, first), map(str, second)))
        out = np.zeros(len(pairs), dtype=np.float32)
        start = time.perf_counter()
        with progress_bar(total=len(pairs), desc="cross-encoder", disable=not progress,
                          leave=False) as bar:
            for lo in range(0, len(pairs), 1024):
                chunk = pairs[lo:lo + 1024]
                out[lo:lo + len(chunk)] = self._predict(chunk)
                bar.update(len(chunk))
        self.pairs_per_second = len(pairs) / max(time.perf_counter() - start, 1e-9)
        return out

    def pair_scores(self, titles: Sequence[str], i: np.ndarray, j: np.ndarray,
                    cache: dict | None = None, order: np.ndarray | None = None,
                    progress: bool = False, scored_only: bool = False) -> np.ndarray:
        """Probability of each candidate pair ``(i[t], j[t])`` of rows of ``titles``.

        The model reads the two titles in a fixed order whichever row asks: the title of the
        row with the smaller ``order`` (default: the row index) first. So each unordered pair
        is scored once, and kept in ``cache`` (a dict per gallery) for later calls; a local
        view of a larger gallery passes the rows' places in it as ``order``, and its pairs are
        read as the larger gallery reads them. ``scored_only``: score nothing, give the
        probabilities already in ``cache`` (NaN for pairs not scored yet).
        """
        cache = {} if cache is None else cache
        store = cache.setdefault(self.cache_key, {})
        i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
        order = np.arange(len(titles)) if order is None else np.asarray(order)
        first_is_i = order[i] <= order[j]
        a, b = np.where(first_is_i, i, j), np.where(first_is_i, j, i)
        keys = a * (len(titles) + 1) + b
        if scored_only:
            return np.array([store.get(key, np.nan) for key in keys.tolist()], dtype=np.float32)
        todo = np.unique(keys[[key not in store for key in keys.tolist()]])
        if len(todo):
            ta, tb = todo // (len(titles) + 1), todo % (len(titles) + 1)
            titles = np.asarray(titles, dtype=object)
            store.update(zip(todo.tolist(), self.score_titles(titles[ta], titles[tb],
                                                              progress).tolist()))
        return np.array([store[key] for key in keys.tolist()], dtype=np.float32)

    def _predict(self, pairs: list[tuple[str, str]]) -> np.ndarray:
        """The cross-encoder's probability of each pair, in batches of similar length."""
        if self.engine == "torch":
            return self.model.predict(pairs, batch_size=self.batch_size, show_progress_bar=False)
        import torch

        graph, names = self._onnx()
        if self.batch_size == 1:  # one pair per run, the graph's workers side by side
            from shopee_match.embed.engines import run_each

            features = [self.model.preprocess([pair]) for pair in pairs]  # tokenizers: 1 thread
            logits = run_each(lambda f: graph(*(f[k].numpy() for k in names)).reshape(1, -1),
                              features, graph.workers)
            return self.model.activation_fn(torch.from_numpy(np.concatenate(logits))).numpy()[
                :, 0]
        order = np.argsort([len(a) + len(b) for a, b in pairs], kind="stable")
        out = np.zeros(len(pairs), dtype=np.float32)
        for lo in range(0, len(pairs), self.batch_size):
            rows = order[lo:lo + self.batch_size]
            features = self.model.preprocess([pairs[r] for r in rows])
            logits = graph(*(features[k].numpy() for k in names))
            out[rows] = self.model.activation_fn(torch.from_numpy(logits)).numpy().reshape(
                len(rows), -1)[:, 0]
        return out

    def _onnx(self):
        """The model's ONNX graph (exported once per weights) and its input names."""
        if self._graph is None:
            from shopee_match.embed.engines import as_module, onnx_model
            from shopee_match.files import file_digest

            example = {k: v for k, v in self.model.preprocess([("a b c", "d"), ("e", "f g")])
                       .items() if hasattr(v, "shape")}
            names = list(example)
            module = as_module(self.model, lambda m, *t: m(dict(zip(names, t)))["scores"])
            model_id = f"cross-encoder:{file_digest(self.folder / 'model.safetensors')}"
            graph = onnx_model(module.eval(), tuple(example.values()), names,
                               [{0: "batch", 1: "tokens"}] * len(names), model_id,
                               int8=self.int8, one_per_call=self.batch_size == 1)
            self._graph = graph, names
        return self._graph

    def token_attributions(self, first: str, second: str, steps: int = 32
                           ) -> list[tuple[str, float]]:
        """Importance of each token of a title pair for the logit (captum's
        ``LayerIntegratedGradients`` on the word embeddings, from a baseline of [PAD] tokens
        with the special tokens kept); scores scaled to [-1, 1]."""
        import torch
        from captum.attr import LayerIntegratedGradients

        model = self.model
        hf = model.model
        hf.eval()
        enc = model.tokenizer(first, second, return_tensors="pt", truncation=True,
                              max_length=model.max_seq_length)
        ids = enc["input_ids"]
        special = torch.tensor(model.tokenizer.get_special_tokens_mask(
            ids[0].tolist(), already_has_special_tokens=True), dtype=torch.bool)[None]
        baseline = torch.where(special, ids, torch.full_like(ids, model.tokenizer.pad_token_id))
        extra = {k: v for k, v in enc.items() if k != "input_ids"}

        def logit(input_ids):
            return hf(input_ids=input_ids, **{k: v.expand(len(input_ids), -1)
                                              for k, v in extra.items()}).logits[:, 0]

        lig = LayerIntegratedGradients(logit, hf.get_input_embeddings())
        attr = lig.attribute(ids, baselines=baseline, n_steps=steps).sum(-1)[0].detach().numpy()
        attr = attr / max(float(np.abs(attr).max()), 1e-12)
        tokens = model.tokenizer.convert_ids_to_tokens(ids[0])
        return [(t, float(a)) for t, a in zip(tokens, attr)]
