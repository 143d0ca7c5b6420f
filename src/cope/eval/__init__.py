"""Evaluation: runner, journal and cache, metrics, replay and calibration, reports."""
