"""Measure a guarded model through llama.cpp: detection, attacks, false flags, utility."""
