"""What every metered server shares: reading requests and usage, building and publishing InferenceUsage."""
