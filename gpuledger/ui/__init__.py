"""The web dashboard (``gpuledger ui``): read-only pages over the ledger's views, scoped per viewer."""
