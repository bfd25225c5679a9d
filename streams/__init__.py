"""Stream processing: the Faust worker that enriches, prices and stores events (``gpuledger worker``)."""
