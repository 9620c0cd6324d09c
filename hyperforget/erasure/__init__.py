"""Deletion requests as records: the append-only ledger, the evidence and signed certificate, processing
a request through its states, and the exact true-up that confirms an approximate answer later."""
