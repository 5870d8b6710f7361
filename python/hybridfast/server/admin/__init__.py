"""The admin API (`/admin/...`, master key only): the ledger's spend and budgets
(`spend.py`) and the cache (`cache.py`)."""
