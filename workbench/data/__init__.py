"""Datasets in and out of a project: SFT examples and preferences in the formats peers use."""
