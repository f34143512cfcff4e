"""Who a sweep belongs to, and who may change it.

A sweep's owner is the configured identity of whoever first recorded it
(FARM_OWNER, else the login name). Only the owner, or an admin (FARM_ADMINS),
may change it: amend its file, raise or lower its priority, cancel or retry
it; an admin may also enqueue a sweep for someone else (`--owner`). A sweep
recorded without an owner (before owners existed, or by a user without a
name) is anyone's.

Without this, anyone enqueueing another file under a known name silently
replaced its owner, priority and stored file — the provenance its exports
carry — and could then cancel it. The identity is not authenticated: it keeps
honest users from mistakes and makes a takeover deliberate, not impossible.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from farm.errors import Conflict, NotPermitted

# Lines of a diff shown in a refusal; the rest is counted.
MAX_DIFF_LINES = 60


def current_user() -> str:
    """The configured identity: FARM_OWNER, else the login name ("" when neither)."""
    import getpass

    from farm_contract.settings import load_settings

    configured = load_settings().owner
    if configured:
        return configured
    try:
        return getpass.getuser()
    except (KeyError, OSError):   # a container user with no name
        return ""


def admins() -> frozenset[str]:
    """The users named in FARM_ADMINS."""
    from farm_contract.settings import load_settings

    return load_settings().admin_names


@dataclass(frozen=True)
class Identity:
    """Who is asking, and whether they are an admin."""

    user: str
    admin: bool

    @classmethod
    def configured(cls) -> Identity:
        """The user of this process, from the settings."""
        user = current_user()
        return cls(user, bool(user) and user in admins())

    def may_change(self, owner: str | None) -> bool:
        """Whether this user may change a sweep owned by `owner`."""
        return self.admin or not owner or owner == self.user


def require_may_change(identity: Identity, sweep: str, owner: str | None,
                       action: str) -> None:
    """Raise NotPermitted unless `identity` may do `action` to the sweep."""
    if not identity.may_change(owner):
        raise NotPermitted(
            f"sweep {sweep!r} is {owner}'s: only {owner} or an admin (FARM_ADMINS) may "
            f"{action} it (you are {identity.user or 'a user without a name'})")


def toml_diff(old: str, new: str, name: str) -> str:
    """A unified diff of the stored sweep file and the new one, at most MAX_DIFF_LINES."""
    lines = list(difflib.unified_diff(old.splitlines(), new.splitlines(),
                                      f"{name} (stored)", f"{name} (this file)", lineterm=""))
    if len(lines) > MAX_DIFF_LINES:
        lines = lines[:MAX_DIFF_LINES] + [f"… {len(lines) - MAX_DIFF_LINES} more line(s)"]
    return "\n".join(lines)


def admission(identity: Identity, name: str, toml_text: str, *, owner: str | None = None,
              priority: int | None = None, amend: bool = False, action: str | None = None
              ) -> Callable[[Any], tuple[str | None, int | None]]:
    """The check `Store.record_sweep` runs on the stored sweep (None: a new name) in
    its transaction: raises to refuse, else returns (owner, priority) to store (None:
    keep what is stored).

    - `owner` (enqueue --owner) is an admin's alone, and must be checked before.
    - A new name: recorded with `owner` or the user, and `priority` or 0.
    - A known name with the same file: nothing changes but what the user may change.
    - Another file under a known name: refused with the diff (Conflict), unless
      `amend` by the owner or an admin.
    - `action` ("run": `farmctl run` retries what it finds left): a known name
      is then the owner's or an admin's alone.
    """

    def check(stored: Any) -> tuple[str | None, int | None]:
        if stored is None:
            return owner or identity.user, priority if priority is not None else 0
        if action is not None:
            require_may_change(identity, name, stored.owner, action)
        if stored.spec_toml != toml_text:
            if not amend:
                raise Conflict(
                    f"sweep {name!r} is already in the store with another file "
                    f"(owner {stored.owner or 'none'}); what changed:\n"
                    f"{toml_diff(stored.spec_toml, toml_text, name)}\n"
                    f"to replace it, its owner or an admin adds --amend (the runs it had "
                    f"are kept; the file exports carry is the new one); or give this file "
                    f"another name")
            require_may_change(identity, name, stored.owner, "amend")
        if priority is not None and priority != stored.priority:
            require_may_change(identity, name, stored.owner,
                               f"change the priority of (now {stored.priority})")
        if owner is not None and owner != stored.owner:
            require_may_change(identity, name, stored.owner, "give away")
        return owner, priority

    return check


def check_owner_option(identity: Identity, owner: str | None) -> None:
    """`enqueue --owner NAME` for anyone but oneself is an admin's alone."""
    if owner is not None and owner != identity.user and not identity.admin:
        raise NotPermitted(
            f"--owner {owner}: only an admin (FARM_ADMINS) enqueues for someone else; "
            f"your sweeps are recorded as yours ({identity.user or 'no name'}, from "
            "FARM_OWNER, else your login name)")
