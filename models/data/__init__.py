"""Datasets: ImageFolder directories with optional product texts, and Fashion-MNIST."""
