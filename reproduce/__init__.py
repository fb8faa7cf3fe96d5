"""Reproduce the FCN papers' tables with the ported weights."""
