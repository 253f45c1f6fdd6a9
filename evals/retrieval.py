"""Image <-> text retrieval recall@k with several captions per image.

Embeddings are L2-normalised [N_img, D] and [N_txt, D]; `text_to_image` [N_txt] gives the image
each caption belongs to (several captions may share one image). Metric keys follow
CLIP_benchmark: image_retrieval_recall@k (a caption finds its image in the top k images) and
text_retrieval_recall@k (an image finds ANY of its captions in the top k captions).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def retrieval_recall(
    image_embeddings: np.ndarray,
    text_embeddings: np.ndarray,
    text_to_image: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    image_embeddings = np.asarray(image_embeddings, np.float32)
    text_embeddings = np.asarray(text_embeddings, np.float32)
    text_to_image = np.asarray(text_to_image, np.int64)
    if text_to_image.shape != (len(text_embeddings),):
        raise ValueError("text_to_image must give one image index per caption.")
    similarity = text_embeddings @ image_embeddings.T  # [N_txt, N_img]
    # Rank of each caption's own image among all images (0 = best); ties count against it.
    own = similarity[np.arange(len(text_to_image)), text_to_image]
    image_rank = (similarity >= own[:, None]).sum(-1) - 1  # minus the own image itself
    # For each image, the best rank of any of its captions among all captions.
    by_image = similarity.T  # [N_img, N_txt]
    owner = text_to_image[None, :] == np.arange(len(image_embeddings))[:, None]
    best_own = np.where(owner, by_image, -np.inf).max(-1)
    text_rank = (np.where(owner, -np.inf, by_image) >= best_own[:, None]).sum(-1)
    has_caption = owner.any(-1)
    metrics = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = float(np.mean(image_rank < k))
        metrics[f"text_retrieval_recall@{k}"] = float(np.mean(text_rank[has_caption] < k))
    return metrics
