"""Layer 0, the vocabulary every other layer uses: tables, reorder plans, THE prompt
serializer, tokenizers, block hashes, the step/request schemas, paths and JSON.

Nothing here imports another ``ggr_kv`` layer, pandas-level I/O aside.
"""
