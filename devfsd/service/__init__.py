"""Running devfsd as a service: what a supervisor (systemd) and an
administrator expect of a daemon, kept apart from the file system itself.

- ``notify``: the sd_notify(3) datagram protocol (``READY=1``, ``STATUS=``,
  ``STOPPING=1``) to ``$NOTIFY_SOCKET``.
- ``modconf``: modules.conf, the modules loaded at start (NetBSD's
  /etc/modules.conf), parsed with modload's own option parser.
- ``mountwatch``: noticing the daemon's own unmount from its mount table,
  even when other mount namespaces keep copies of the mount alive.
- ``logs``: log handlers (file, syslog, journald's stderr), reopening the
  log file on SIGHUP, faulthandler on the log.
- ``detach``: what a detached daemon does (working directory, umask,
  inherited descriptors), and who holds a control socket.
- ``unit``: ``devfsd unit`` and ``devfsd logrotate``, the files an
  installation needs.
"""
