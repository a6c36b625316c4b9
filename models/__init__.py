"""Pure machine learning for Shelfsight: no Kafka, Redis or Qdrant imports here.

- ``images``     — safe decoding of untrusted image bytes, and preprocessing transforms
- ``encoders``   — vision backbones behind one interface (a builder each), and the text encoder
- ``fusion``     — image + text → fused vector, per-modality vectors and category logits
- ``data``       — ImageFolder datasets, product texts, the Fashion-MNIST converter
- ``training``   — frozen-backbone and fine-tune training, checkpoints with a model card
- ``evaluation`` — metrics and the markdown report with its confusion matrix
- ``predictor``  — the one object services use: checkpoint in, categories and vectors out
"""
