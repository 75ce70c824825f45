"""Small shared helpers: atomic file writing, weight lookup, seeding, the CPU heap setting of training."""
