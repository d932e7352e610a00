"""Prediction stage: the trained ensemble applied to every test-year image."""
