"""The embedder: products.listed → Predictor → Qdrant + products.indexed."""
