"""Fixtures and servers the tests share (and the only test code benchmarks may import): a tiny
adversarial table root, a real redis-server, a real Spark standalone cluster, image files."""
