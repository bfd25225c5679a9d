"""The store layer: ClickHouse tables' columns and the SQL run against them, built in one place.

One module per topic (``tables``: columns written by the worker; ``rollups``: incremental
spend rollups; ``spend``: budget spend). Builders return SQL text and bound parameters and are
unit-tested without a database; values always travel as parameters, never spliced in.
"""
