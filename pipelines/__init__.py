"""Stages, config, the Ray launcher, the model registry and the Prefect flow."""
