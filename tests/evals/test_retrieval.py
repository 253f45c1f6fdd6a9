"""Retrieval recall@k with several (and duplicate) captions per image."""

import numpy as np
import pytest

from evals.retrieval import retrieval_recall


def test_retrieval_with_several_captions_per_image():
    images = np.eye(3)
    # Captions 0 and 1 belong to image 0, caption 2 to image 1, caption 3 to image 2; captions
    # 2 and 3 each lean towards the other's image (two retrieval errors).
    texts = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 0.6, 0.8], [0, 0.8, 0.6]])
    texts = texts / np.linalg.norm(texts, axis=-1, keepdims=True)
    owners = np.array([0, 0, 1, 2])
    metrics = retrieval_recall(images, texts, owners, ks=(1, 2))
    assert metrics["image_retrieval_recall@1"] == pytest.approx(2 / 4)
    assert metrics["image_retrieval_recall@2"] == pytest.approx(1.0)
    # Image 0 finds one of its two captions first; images 1 and 2 find the other's caption first.
    assert metrics["text_retrieval_recall@1"] == pytest.approx(1 / 3)
    assert metrics["text_retrieval_recall@2"] == pytest.approx(1.0)


def test_duplicate_captions_do_not_count_against_their_own_image():
    images = np.eye(2)
    texts = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])  # two identical captions of image 0
    metrics = retrieval_recall(images, texts, np.array([0, 0, 1]), ks=(1,))
    assert metrics["image_retrieval_recall@1"] == 1.0
    assert metrics["text_retrieval_recall@1"] == 1.0
    with pytest.raises(ValueError, match="one image index per caption"):
        retrieval_recall(images, texts, np.array([0, 1]))


def test_ties_with_other_items_count_against_the_query():
    """Identical captions of DIFFERENT images (or identical images) cannot both be found first:
    a tie is a miss at k=1, not a hit for everyone (the pessimistic, honest ranking)."""
    images = np.array([[1.0, 0.0], [1.0, 0.0]])
    texts = np.array([[1.0, 0.0], [1.0, 0.0]])
    metrics = retrieval_recall(images, texts, np.array([0, 1]), ks=(1, 2))
    assert metrics["image_retrieval_recall@1"] == 0.0
    assert metrics["text_retrieval_recall@1"] == 0.0
    assert metrics["image_retrieval_recall@2"] == 1.0
    assert metrics["text_retrieval_recall@2"] == 1.0
