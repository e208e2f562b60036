"""The aggregator: a Bytewax dataflow joining cart events with the catalog and folding carts."""
