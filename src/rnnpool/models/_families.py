"""Imports every model family so that its entrypoints register. Add new families here."""
