"""Test helpers shared by every test package (factories for datasets and other fixtures' data)."""
