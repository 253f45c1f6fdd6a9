"""Classifier heads: DET, HET (logit-space noise) and HET-XL (pre-logit-space noise)."""

from hetclip.heads.base import MODES, Head
from hetclip.heads.det import DetHead
from hetclip.heads.het import HetHead
from hetclip.heads.hetxl import HetXLHead

HEADS = {"det": DetHead, "het": HetHead, "hetxl": HetXLHead}

__all__ = ["HEADS", "MODES", "DetHead", "Head", "HetHead", "HetXLHead"]
