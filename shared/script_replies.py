"""Which error replies to a script call mean that the call ran nothing.

Only such a call may be sent again (shared/scripts.py, shared/cluster_scripts.py): Redis
does not roll a script back, so a call that failed half-way (its own NOPERM on a key, an
OOM at a later write, a Lua error) has changed what it changed, and is never resent.
"""

from __future__ import annotations

from redis.exceptions import NoPermissionError, NoScriptError, ResponseError


def function_missing(reply: object) -> bool:
    """An FCALL's reply that says the function is not loaded on that server."""
    return isinstance(reply, ResponseError) and str(reply).startswith("Function not found")


def code_missing(reply: object) -> bool:
    """The code the call names is not on that server: NOSCRIPT, or "Function not found"."""
    return isinstance(reply, NoScriptError) or function_missing(reply)


def functions_refused(reply: object) -> bool:
    """The reply to an FCALL or a FUNCTION LOAD that says this server or this user cannot
    use Functions: the command is unknown, or the ACL denies the command itself. Only those
    exact refusals count: a script's own NOPERM (a key its ACL denies, met half-way
    through) is the reply of a call that ran."""
    if not isinstance(reply, ResponseError):
        return False
    text = str(reply).lower()
    if text.startswith("unknown command") or text.startswith("unknown subcommand"):
        return True
    return isinstance(reply, NoPermissionError) and (
        "'fcall' command" in text or "'function|load' command" in text
    )


def not_run(reply: object) -> bool:
    """Whether a call's reply says it ran nothing, so that it may be sent again once that is
    settled: its code missing, or Functions refused."""
    return code_missing(reply) or functions_refused(reply)
