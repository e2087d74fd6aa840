"""Maintenance tools run from a checkout (`make lock`); not part of the installed package."""
