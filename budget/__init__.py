"""Budgets at run time: the Redis store and its scripts, the slot pacer, the spend ledger, reconciliation."""
