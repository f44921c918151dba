"""What else the machine was doing while a bench ran: load averages and CPU pressure.

Figures from a shared machine are only comparable with the load they were taken under, so
every bench report carries this (at its start and end). /proc/pressure/cpu (PSI) needs Linux
4.20+ with PSI enabled; where it cannot be read the field is absent.
"""

from __future__ import annotations

import os


def machine_load() -> dict:
    out: dict = {'cpus': os.cpu_count()}
    try:
        out['loadavg_1_5_15'] = list(os.getloadavg())
    except OSError:
        pass
    try:
        with open('/proc/pressure/cpu') as f:
            for line in f:
                kind, *fields = line.split()
                out[f'cpu_pressure_{kind}'] = {k: float(v) for k, v in
                                              (x.split('=') for x in fields)
                                              if k.startswith('avg')}
    except (OSError, ValueError):
        pass
    return out
