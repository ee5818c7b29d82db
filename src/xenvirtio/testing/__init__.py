"""Builders, conformance suites and strategies shared by the tests."""
