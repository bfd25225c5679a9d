"""The ``gpuledger`` command line and what only its commands use (imports, reports, exports, the simulator).

Top layer: it may import every component; nothing imports it.
"""
