"""ViT-B/16 SigLIP: clip_vit_b16.py with the sigmoid loss (t = log 10, b = -10, MAP pooling,
ring exchange of text blocks).

  hetclip train --config siglip_vit_b16.py:data=/data/shards/{0000..0999}.tar --workdir runs/s
"""

import ml_collections

from hetclip.configs import clip_vit_b16


def get_config(arg=None):
    arg = arg or ml_collections.ConfigDict()
    arg.sigmoid = True
    return clip_vit_b16.get_config(arg)
