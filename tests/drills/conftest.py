"""The drills reuse the training tests' toy dataset (16 coloured 16 px images)."""

from tests.training.conftest import toy_data  # noqa: F401  (a fixture)
