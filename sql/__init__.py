"""ClickHouse migrations, applied in order by ``gpuledger migrate``."""
