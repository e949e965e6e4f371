"""Identity resolution for ride-hailing fleet partners: the Python half of a dbt project.

dbt builds the candidate table; this package scores it, clusters records into persons and
idempotently upserts the registry, links and origins. See docs/architecture.md.
"""

__version__ = "0.1.0"
