"""NetBSD's own tests of the module framework and mknod, ported to devfsd.

Each test names the NetBSD file and line it comes from, first thing in its
docstring (``t_modload.sh:52``); ``test_meta.py`` holds every test here to
that. The NetBSD sources compared against (CVS revision, and where the
copy was read):

- ``tests/modules/t_modload.sh`` 1.13 (2012/04/20), ``t_modctl.c`` 1.12
  (2012/08/20), ``t_builtin.c`` 1.3.12.1 (2018/09/05),
  ``k_helper/k_helper.c`` 1.6 (2012/06/03): NetBSD/src (GitHub mirror).
- ``sys/kern/kern_module.c`` 1.155 (2022/08/07): NetBSD/src at commit
  010967328760440864e4e90556a2d81fa9eb2047; and 1.106 (2015/06/22) for
  ``MODULE_MAX_DEPTH``, which later revisions dropped.
- ``common/lib/libprop/prop_dictionary.c`` (``PDK_MAXKEY`` 128).
- ``sbin/mknod/mknod.c`` 1.42 (2014/08/22), line numbers of the copy in
  littlefly365/Netbase at commit e2dd6d6f78081891ebe3f87d4e6d2768739a6e32
  (it lacks the three-line ``<sys/sysctl.h>`` include that 1.40 has
  after ``<sys/param.h>``, line 45, so NetBSD's own numbers past it are
  likely three higher); ``sbin/mknod/pack_dev.c``
  1.9.6.1 (2009/05/13), NetBSD/src at commit
  308f126a780670cfe866ccd5385d7c0c29a2d4ed, whose checks 1.12 (2013) keeps.
- ``sbin/modload/main.c`` 1.12 (2009/06/10), NetBSD/src at commit
  06a30a42b1f0a1b3eccd4386459a362b32ed7fba.
- ``sbin/modstat/main.c`` 1.15.2.1 (2014/08/20), the newest the stored
  copies hold; devfsd prints the later layout (FLAG column), so only the
  rules both share are ported.

Where devfsd departs on purpose, the test still asserts NetBSD's behaviour
and is marked with ``departure(...)`` (``netbsd.py``): an expected failure,
strict, whose reason names the man page that says so in its COMPATIBILITY
section; ``test_meta.py`` checks that the page does.
"""
