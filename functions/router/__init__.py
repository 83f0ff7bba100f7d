"""Router blueprint: an endpoint's stable URL (auth -> choose deployment -> forward; mirror;
traffic admin; OpenAPI). Never imports onnxruntime or numpy."""

from functions.router.blueprint import bp, openapi_bp

__all__ = ["bp", "openapi_bp"]
