"""Online scoring blueprint: Open Inference Protocol v2 + /score + health + OpenAPI."""

from functions.score_online.blueprint import bp

__all__ = ["bp"]
