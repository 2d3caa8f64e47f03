"""factory_boy factories, one module per app; registered as fixtures in tests/conftest.py."""
