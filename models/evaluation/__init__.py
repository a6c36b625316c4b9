"""Measuring a checkpoint on labelled data, and writing the report."""
