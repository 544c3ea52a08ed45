"""Simulated nightly refreshes under injected faults (see ``tests/soak/nights.py``)."""
