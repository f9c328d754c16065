"""Who acts: every ledger entry records the actor that caused it.

On the command line the actor is `ERASURE_ACTOR`, else the operating-system user; a service
acts as the caller its token names (`Ledger.acting_as`). The name is recorded in plain text
in the ledger, the status and the report, so it must name an operator, never a subject: it
is checked like any text we print (no control or invisible characters, at most 128
characters).
"""

from __future__ import annotations

import getpass
import os
import unicodedata

from .errors import ConfigError

ENV_ACTOR = "ERASURE_ACTOR"
MAX_ACTOR_CHARS = 128


def check_actor(name: str, source: str = ENV_ACTOR) -> str:
    """`name` trimmed, once it is a printable name; ConfigError (exit 3) otherwise."""
    text = name.strip()
    if not text:
        raise ConfigError(f"{source} is empty: name the operator who acts")
    if len(text) > MAX_ACTOR_CHARS:
        raise ConfigError(f"{source} is longer than {MAX_ACTOR_CHARS} characters")
    if any(unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp") for ch in text):
        raise ConfigError(f"{source} holds a control or invisible character")
    return text


def current_actor() -> str:
    """The operator acting in this process: ERASURE_ACTOR, else the OS user name."""
    env = os.environ.get(ENV_ACTOR)
    if env is not None:
        return check_actor(env)
    try:
        user = getpass.getuser()
    except (KeyError, OSError):       # no name for this uid (a container): its number
        user = f"uid:{os.getuid()}"
    return check_actor(user, "the operating-system user name")
