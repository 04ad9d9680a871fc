"""Which error replies let a script call be sent again (shared/script_replies.py): only those that
say the call ran nothing. A script's own error, met half-way through its writes, is never
sent again, even when it is an ACL refusal: Redis does not roll a script back."""

from __future__ import annotations

import pytest
from redis.exceptions import NoPermissionError, NoScriptError, OutOfMemoryError, ResponseError

from shared.script_replies import function_missing, functions_refused, not_run


@pytest.mark.parametrize(
    "error",
    [
        NoScriptError("No matching script. Please use EVAL."),
        ResponseError("Function not found"),
        ResponseError("unknown command 'FCALL', with args beginning with: 'emp_x_submit'"),
        ResponseError("unknown subcommand 'LOAD'. Try FUNCTION HELP."),
        NoPermissionError("this user has no permissions to run the 'fcall' command"),
        NoPermissionError("User w has no permissions to run the 'function|load' command"),
    ],
)
def test_replies_of_calls_that_ran_nothing_may_be_sent_again(error: ResponseError) -> None:
    assert not_run(error)


@pytest.mark.parametrize(
    "error",
    [
        NoPermissionError("User w has no permissions to run the 'hset' command"),
        NoPermissionError("No permissions to access a key"),
        ResponseError("ERR user_function:12: Script attempted to access nonexistent global"),
        OutOfMemoryError("command not allowed when used memory > 'maxmemory'."),
        ResponseError("WRONGTYPE Operation against a key holding the wrong kind of value"),
    ],
)
def test_a_scripts_own_errors_are_never_sent_again(error: ResponseError) -> None:
    assert not not_run(error)


def test_a_missing_library_is_loaded_and_refused_functions_fall_back() -> None:
    assert function_missing(ResponseError("Function not found"))
    assert not functions_refused(ResponseError("Function not found"))
    refused = NoPermissionError("this user has no permissions to run the 'fcall' command")
    assert functions_refused(refused)
    assert not function_missing(refused)
