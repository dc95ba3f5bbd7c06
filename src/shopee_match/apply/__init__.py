"""Applying what was learnt: candidates (saved ways to match), their second stages, the apply
pipeline, tuning set-up, submission, dedupe and the matching service. Imports every layer
below; only the faces (CLI, HTTP app, report, notebook helpers, plots) import it."""
