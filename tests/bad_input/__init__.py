"""Helpers of ``tests/test_bad_input.py``: hostile objects, the stored layouts written out from
their documentation, and the Hypothesis strategies of bad input."""
