"""Benchmarks of whole nodes (real processes, real RabbitMQ and Redis), each against an in-process
baseline run in the same invocation on the same machine: ``python -m bench [scenario]``.

Not part of the test suite (pytest collects ``tests/`` only); results go to ``bench/results/``.
"""
