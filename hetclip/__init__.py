"""hetclip: heteroscedastic (HET-XL) image-text and supervised pretraining on JAX."""

__version__ = "0.1.0"
