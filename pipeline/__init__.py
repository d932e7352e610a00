"""Replication of Jiang, Kelly & Xiu, "(Re-)Imag(in)ing Price Trends", as a staged pipeline."""
