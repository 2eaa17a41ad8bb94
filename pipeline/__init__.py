"""Syndicate: approved articles -> feeds, email digests and partner pushes."""

__version__ = "0.1.0"
