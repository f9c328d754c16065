"""Commands for keys held in Vault / OpenBao (`erasure shred`); registered on the `erasure`
app by erasure/cli.py. Heavy libraries load inside the commands."""

from __future__ import annotations
