"""Helpers shared by the tests: a real daemon subprocess and a second gRPC stack."""
