"""The local stack: a real Kafka (KRaft) and a real ClickHouse on this machine."""
