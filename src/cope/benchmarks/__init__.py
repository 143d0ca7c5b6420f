"""Benchmarks: loaders for the data sets that installed packages ship."""
