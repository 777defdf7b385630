"""The image normalisation of ImageNet-trained backbones.

Both image backbones' weights were trained on images normalised this way,
so the ``kbrec_image`` processor that makes their inputs and the encoders
that read them must agree on it; they take it from here.
"""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
