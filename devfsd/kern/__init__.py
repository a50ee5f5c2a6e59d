"""The module framework: what a module declares and how it is loaded.

The module API (with ``devfsd.cdevsw``); see devfsd-module(9)::

    from devfsd.kern import ModCmd, ModuleClass, ModuleInfo, Props
"""

from __future__ import annotations

from devfsd.kern.loader import ModStat, ModuleLoader, current_module, kthread_create, module_load
from devfsd.kern.module import MAXMODNAME, ModCmd, ModuleClass, ModuleInfo, Props
from devfsd.kern.props import PropError, check_props, parse_bool, parse_int, parse_param
from devfsd.kern.sockets import bind_unix_listener
from devfsd.kern.threads import run_in_thread

__all__ = [
    "MAXMODNAME",
    "ModCmd",
    "ModStat",
    "ModuleClass",
    "ModuleInfo",
    "ModuleLoader",
    "PropError",
    "Props",
    "bind_unix_listener",
    "check_props",
    "current_module",
    "kthread_create",
    "module_load",
    "parse_bool",
    "parse_int",
    "parse_param",
    "run_in_thread",
]
