"""The broker's state machine: routing, receipts, presence, locks, threads, TTLs.

No asyncio, no sockets, no sqlite3: `broker.Core` takes a command and the time and
returns the effects for the server to carry out.
"""
