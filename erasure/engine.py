"""Wiring: one object that holds the config and opens the ledger, keys, lineage and connectors
lazily, so `erasure --help` and light commands import nothing heavy."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Config, load_config
from .errors import MalformedEventError

if TYPE_CHECKING:       # annotations only: these load at first use, not at import
    from connectors.base import ConnectorRegistry

    from .ledger import Ledger
    from .lineage.graph import LineageGraph
    from .lineage.store import IngestReport, LineageStore
    from .subject import SubjectKeys


class Engine:
    def __init__(self, config: Config, registry: ConnectorRegistry | None = None,
                 actor: str | None = None):
        """`actor`: who acts (a service token's name); default ERASURE_ACTOR or the OS user."""
        self.config = config
        self._registry = registry
        self._actor = actor

    @classmethod
    def from_path(cls, path: Path) -> "Engine":
        return cls(load_config(path))

    @cached_property
    def ledger(self) -> Ledger:
        """The ledger, with its chain key (derived from the subject key): entries are
        appended and verified under that key."""
        from .actors import current_actor
        from .ledger import Ledger, chain_key

        return Ledger(self.config.ledger_path, chain_key(self.keys),
                      self._actor if self._actor is not None else current_actor(),
                      url=self.config.ledger_url)

    @cached_property
    def keys(self) -> SubjectKeys:
        """The subject key. Created on first use only: once the ledger holds entries, a
        missing key is an error (a new key could neither open their sealed ids, match their
        HMACs nor verify their chain). Decided from a plain count on the ledger file, so
        the key is known before the ledger is opened with it."""
        from .ledger import count_entries
        from .subject import load_keys

        has_entries = count_entries(self.config.ledger_path, self.config.ledger_url) > 0
        # `[keys] provider`: "file" (SubjectKeys) or "vault" (erasure/vault.py, VaultKeys)
        return load_keys(self.config, create=not has_entries)

    @cached_property
    def lineage_store(self) -> LineageStore:
        from .lineage.store import LineageStore

        return LineageStore(self.config.lineage_store)

    @cached_property
    def policy(self) -> Any:
        """The `[policy]` (erasure/policy.py), loaded and checked once; None without one. A
        policy that does not load is a configuration error (exit 3)."""
        from .policy import load_policy

        return load_policy(self.config)

    def holds(self) -> Any:
        """Every legal hold, as the ledger records them now (erasure/holds.py)."""
        from .holds import HoldBook

        if "ledger" not in self.__dict__ and self.config.ledger_url is None \
                and not self.config.ledger_path.exists():
            return HoldBook()        # no ledger yet, so no hold (a dry run creates none)
        return HoldBook.load(self.ledger)

    def governance(self, states: Any = ()) -> Any:
        """Policy and holds for planning these requests' states (erasure/governance.py)."""
        from .governance import Governance, facts_of

        return Governance(self.policy, self.holds(),
                          {st.subject_hmac: facts_of(st) for st in states})

    @property
    def registry(self) -> ConnectorRegistry:
        if self._registry is None:
            from connectors import default_registry

            self._registry = default_registry(self.config)
        return self._registry

    def ingest(self, files: list[Path], lenient: bool | None = None,
               force: bool = False) -> IngestReport:
        lenient = self.config.lenient_events if lenient is None else lenient
        return self.lineage_store.ingest(files, lenient=lenient, force=force)

    def ingest_configured(self) -> IngestReport:
        """Ingest the configured event globs (only changed files are read). A refused file
        stops the command: a plan on partial lineage could miss where a subject's data went."""
        from .lineage.store import expand_globs

        rep = self.ingest(expand_globs(self.config.event_globs))
        if rep.files_refused:
            detail = "; ".join(str(r) for r in rep.rejected[:5])
            more = f" (+{len(rep.rejected) - 5} more)" if len(rep.rejected) > 5 else ""
            raise MalformedEventError(
                f"lineage event file(s) refused: {', '.join(rep.files_refused)}: {detail}{more}. "
                "Fix them, or set [lineage] lenient = true to skip malformed events")
        return rep

    def graph(self) -> LineageGraph:
        from .lineage.graph import LineageGraph

        self.ingest_configured()
        return LineageGraph(self.lineage_store.events())

    def close(self) -> None:
        if self._registry is not None:
            from connectors.base import Closes

            for conn in self._registry.connectors:
                if isinstance(conn, Closes):
                    conn.close()
        for name in ("ledger", "lineage_store"):
            if name in self.__dict__:
                self.__dict__[name].close()
