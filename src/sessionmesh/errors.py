"""The one exception tree of sessionmesh.

Every error the broker can report carries a stable wire ``code``; the client raises
the same class from the code it receives, so ``except NameTaken`` works on both
sides of the socket::

    MeshError                       code            HTTP
    ├── BadRequest                  bad_request     400
    │   ├── BadFrame                bad_frame       400   malformed JSON, wrong types
    │   ├── UnknownOp               unknown_op      400
    │   ├── SelfSend                self_send       400   you never message yourself
    │   ├── InvalidName             invalid_name    400
    │   ├── SecretInBody            secret_in_body  400   a private key or API token
    │   ├── EmptyBody               empty_body      400   a message with nothing in it
    │   ├── AmbiguousId             ambiguous_id    400   client side: an id prefix that fits several
    │   ├── UnsafeText              unsafe_text     400   a field peers see carries a destructive command or a secret
    │   └── NeedsTerminal           needs_terminal  400   client side: the person is asked on a terminal
    ├── Unauthorized                unauthorized    401   missing or wrong token
    │   ├── BadPassphrase           bad_passphrase  401   not the person's passphrase
    │   └── PersonRequired          person_required 401   needs the person's login (a person session)
    ├── Forbidden                   forbidden       403
    │   ├── Impersonation           impersonation   403   `from` names someone else
    │   ├── BadSecret               bad_secret      403   name held by another secret
    │   ├── NotApprover             not_approver    403   only a person approves holds
    │   ├── WrongRole               wrong_role      403   a pair action the other role takes
    │   └── ReservedName            reserved_name   403   `human` and its kin are the person's
    ├── NotFound                    not_found       404
    │   ├── UnknownPeer             unknown_peer    404
    │   ├── UnknownMessage          unknown_message 404
    │   └── NoPerson                no_person       404   no person credential set yet
    ├── Conflict                    conflict        409
    │   ├── NameTaken               name_taken      409   a live claimant holds it
    │   ├── NotHolder               not_holder      409   unlock of a lease you lack
    │   └── PairState               pair_state      409   not paired, already paired, no invitation
    ├── TooLarge                    too_large       413
    ├── WrongHost                   wrong_host      421   a Host header not the broker's own
    ├── RateLimited                 rate_limited    429
    ├── Timeout                     timeout         504   client side: no answer in time
    ├── Unavailable                 unavailable     503   no broker reachable
    └── StorageError                storage_error   500   the store failed
        ├── DuplicateMessage        duplicate_message 500 (internal: a stored id again)
        └── Contention              contention      503   a shared record changed under a write

`Refused` send outcomes (self-send, oversize, bad name, rate limit, secret) are not
exceptions: a send answers with the status ``refused`` and the error as its reason.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing (a hook imports this)
if TYPE_CHECKING:
    from typing import Any


class MeshError(Exception):
    """Root of every sessionmesh error."""

    code = "mesh_error"
    http_status = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def to_wire(self) -> dict[str, Any]:
        wire: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.hint:
            wire["hint"] = self.hint
        return wire

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class BadRequest(MeshError):
    code = "bad_request"
    http_status = 400


class BadFrame(BadRequest):
    code = "bad_frame"


class UnknownOp(BadRequest):
    code = "unknown_op"


class SelfSend(BadRequest):
    code = "self_send"


class InvalidName(BadRequest):
    code = "invalid_name"


class SecretInBody(BadRequest):
    code = "secret_in_body"


class EmptyBody(BadRequest):
    code = "empty_body"


class AmbiguousId(BadRequest):
    """Client side: a message id prefix that more than one message starts with."""

    code = "ambiguous_id"


class UnsafeText(BadRequest):
    """A field every peer sees (a lock's reason or resource, a status, a role, other
    metadata) carries what screening holds or refuses in a message body."""

    code = "unsafe_text"


class NeedsTerminal(BadRequest):
    """The person's passphrase is read from a terminal, and this process has none."""

    code = "needs_terminal"


class WrongHost(MeshError):
    """A request whose ``Host`` is not a name of this broker (a DNS-rebinding page)."""

    code = "wrong_host"
    http_status = 421


class Unauthorized(MeshError):
    code = "unauthorized"
    http_status = 401


class BadPassphrase(Unauthorized):
    code = "bad_passphrase"


class Forbidden(MeshError):
    code = "forbidden"
    http_status = 403


class Impersonation(Forbidden):
    code = "impersonation"


class BadSecret(Forbidden):
    code = "bad_secret"


class NotApprover(Forbidden):
    code = "not_approver"


class WrongRole(Forbidden):
    code = "wrong_role"


class ReservedName(Forbidden):
    """``human`` and the names that read as its sessions belong to the person."""

    code = "reserved_name"


class PersonRequired(Unauthorized):
    """Only a person session may do this (approve, send as the person, read all mail)."""

    code = "person_required"


class NotFound(MeshError):
    code = "not_found"
    http_status = 404


class UnknownPeer(NotFound):
    code = "unknown_peer"


class UnknownMessage(NotFound):
    code = "unknown_message"


class NoPerson(NotFound):
    """No person credential is set on this machine yet (``mesh person init``)."""

    code = "no_person"


class Conflict(MeshError):
    code = "conflict"
    http_status = 409


class NameTaken(Conflict):
    code = "name_taken"


class NotHolder(Conflict):
    code = "not_holder"


class PairState(Conflict):
    code = "pair_state"


class TooLarge(MeshError):
    code = "too_large"
    http_status = 413


class RateLimited(MeshError):
    code = "rate_limited"
    http_status = 429


class Timeout(MeshError):
    code = "timeout"
    http_status = 504


class Unavailable(MeshError):
    code = "unavailable"
    http_status = 503


class StorageError(MeshError):
    code = "storage_error"
    http_status = 500


class DuplicateMessage(StorageError):
    """The store already holds a message with this id (the core answers the resend)."""

    code = "duplicate_message"


class Contention(StorageError):
    """A shared record (the NATS lease table) changed between a read and the write
    that depended on it; the core reads again and decides again."""

    code = "contention"
    http_status = 503


def _all_subclasses(cls: type[MeshError]) -> list[type[MeshError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_all_subclasses(sub))
    return out


_BY_CODE: dict[str, type[MeshError]] = {c.code: c for c in _all_subclasses(MeshError)}


def from_wire(error: dict[str, Any]) -> MeshError:
    """Rebuild the exception a broker reported as ``{"code", "message", "hint"}``."""
    cls = _BY_CODE.get(str(error.get("code")), MeshError)
    return cls(str(error.get("message", "unknown error")), hint=error.get("hint"))
