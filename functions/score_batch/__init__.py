"""Batch scoring blueprint: blob drop -> plan; chunk queue -> score; poison queue -> record."""

from functions.score_batch.blueprint import bp

__all__ = ["bp"]
