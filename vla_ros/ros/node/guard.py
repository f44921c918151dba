"""The last line of defence for the vla_policy node's callbacks, and small message helpers.

`guarded` turns an exception escaping an executor callback (or a control tick) into a fault
the control loop holds on, a rate-limited log line and, for services, a failed response. Used
by every part of the node; imports only the standard library and builtin_interfaces.
"""

from __future__ import annotations

import functools
import time

CALLBACK_FAULT_HOLD_S = 1.0  # how long a failed callback holds the robot


def guarded(name: str):
    """Last line of defence for executor callbacks. An exception escaping a callback ends
    the executor's spin, which would stop every callback, the control loop included. Here it
    is logged, kept as a fault (the control loop holds while it is set) and the callback
    returns; services answer success=False with the reason."""

    def wrap(fn):
        @functools.wraps(fn)
        def inner(self, *args):
            try:
                return fn(self, *args)
            except Exception as e:  # the handling is complete: hold, diagnose, log
                self._callback_fault = f'{name} failed: {type(e).__name__}: {e}'
                self._callback_fault_at = time.monotonic()
                self._callback_errors += 1
                self._log_every(f'guard-{name}', 2.0, 'error',
                                f'{self._callback_fault}; holding')
                if len(args) == 2 and hasattr(args[1], 'success'):  # a service response
                    args[1].success, args[1].message = False, self._callback_fault
                    return args[1]
                return None

        return inner

    return wrap


def duration_msg(seconds: float):
    from builtin_interfaces.msg import Duration

    ns = int(round(seconds * 1e9))
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)
