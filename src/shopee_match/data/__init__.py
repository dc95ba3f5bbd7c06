"""Data: paths, the column schema, loading and validating catalogs, group-aware splits, the
demo generator and the Kaggle download. Imports nothing else of the kit."""
