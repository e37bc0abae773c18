"""Placeholder for EDM's torch_utils.misc: only imported, so that loading must cope with its absence."""
