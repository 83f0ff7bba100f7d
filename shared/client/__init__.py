"""Client SDK for scorefn endpoints: ``ScoringClient`` (any azure-identity credential, or
an endpoint key) and ``DevIssuerCredential`` (tokens from the local dev issuer's key)."""

from shared.client.dev_credential import DevIssuerCredential
from shared.client.scoring import Scored, ScoringClient

__all__ = ["DevIssuerCredential", "Scored", "ScoringClient"]
