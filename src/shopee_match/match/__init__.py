"""Matching: neighbour search, the matcher configuration, the one match decision, second-stage
pair scoring, metrics and the selection protocol. Imports only :mod:`shopee_match.data`;
never embedding or training."""
