"""gpuledger application shell: settings, logging, connections, local stack and CLI."""
