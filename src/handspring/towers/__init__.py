"""Towers: one modality of a model each, as preprocessing -> graph -> postprocessing."""
