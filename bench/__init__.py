"""Throughput benchmarks: ``python -m bench NAME [options]``; each NAME is a module here."""
