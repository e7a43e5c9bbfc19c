"""The zoo test reuses the exactness check of tests/toy_models.py and the fast suite's settings."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "tests"))
