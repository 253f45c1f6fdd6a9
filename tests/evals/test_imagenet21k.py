"""ImageNet-21k class names from the WordNet data in the timm wheel."""

from evals.imagenet21k import NUM_CLASSES, imagenet21k_class_names, imagenet21k_synsets


def test_all_21843_classes_have_unique_names_in_label_order():
    names, synsets = imagenet21k_class_names(), imagenet21k_synsets()
    assert len(names) == len(synsets) == NUM_CLASSES
    assert len(set(names)) == NUM_CLASSES
    assert synsets[0] == "n00004475" and names[0] == "organism"
    assert all(name and "_" not in name for name in names)
    # Homonyms are told apart: WordNet's crane (bird) and crane (lifting machine).
    cranes = [n for n in names if n.startswith("crane")]
    assert len(cranes) >= 2 and len(set(cranes)) == len(cranes)
