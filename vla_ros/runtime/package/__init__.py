"""The model-package format: what a package is on disk and how it is validated.

Owns the manifest schema (manifest.py), its parsing (parse.py) and cross-field checks
(consistency.py), file safety and hashes (files.py), loading and writing (loader.py) and the
human-readable summary (summary.py). Imports only runtime.errors from the project.
"""
