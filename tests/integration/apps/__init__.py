"""Tiny Function Apps served by the local host in integration tests."""
