"""Shipped model artifacts (package data of runtime.artifacts)."""
