"""Hostcalls grouped by area; `registry` ties them together."""
