"""tickstore."""
