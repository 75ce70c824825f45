"""Small shared helpers: atomic file writing, weight lookup, seeding."""
