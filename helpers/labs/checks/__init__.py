"""The labs' checks: what a task must have achieved, verified on the real cluster.

Every check inspects the real state (Serve's status and recorded configs, the replicas, real
HTTP and handle calls, the files the student wrote), never a variable's value alone. It prints
a line when it passes; when it fails it raises :class:`LabCheckFailed` with feedback that
says *what is wrong* and *where to look* (the format all the workbook's checks share:
:mod:`helpers.check_feedback`). Each is registered with its lab, its task and
whether it is visible (in the student's notebook) or hidden (put back by the grader).

When the environment variable ``WORKBOOK_LAB_RESULTS`` names a file, every check appends its
result to it as one JSON line: that is how the tests collect the results of the solutions'
proofs. The grader does not read such a file: it runs a submission's checks itself
(:mod:`helpers.labs.referee`) and collects what they return (:func:`collected_results`).

Where things are: :mod:`~helpers.labs.checks.framework` holds the registry (:func:`lab_check`,
:data:`CHECKS`), the results and the cluster and HTTP plumbing the checks share; each lab's
checks are a module of their own, named after the lab (``lab01.py`` ... ``lab09.py``). This
package imports all of them, so importing any part of it registers every lab's checks, and
every check is a name here. The hidden checks live in :mod:`helpers.labs.hidden_checks` (the
instructor's part, left out of the student kit) and are named here when that module is
installed.

Usage (a check cell of a lab)::

    from helpers.labs import checks
    checks.lab01_deployment_as_specified(lab, replicas=2, num_cpus=0.25, memory_mib=128,
                                         max_ongoing=4)

    with checks.deferred_failures():       # several checks in one cell: each one runs and records
        checks.lab01_answers_over_http(lab, http_reply, text=sample_text)
        checks.lab01_answers_by_handle(lab, handle_reply, text=sample_text)
"""

from __future__ import annotations

from helpers.labs.checks import lab01, lab02, lab03, lab04, lab05, lab06, lab07, lab08, lab09
from helpers.labs.checks.framework import *
from helpers.labs.checks.framework import __all__ as _framework_names
from helpers.labs.checks.lab01 import *
from helpers.labs.checks.lab02 import *
from helpers.labs.checks.lab03 import *
from helpers.labs.checks.lab04 import *
from helpers.labs.checks.lab05 import *
from helpers.labs.checks.lab06 import *
from helpers.labs.checks.lab07 import *
from helpers.labs.checks.lab08 import *
from helpers.labs.checks.lab09 import *

#: The modules of the labs' visible checks, in the order they register (the lab id is each
#: module's name).
LAB_MODULES = (lab01, lab02, lab03, lab04, lab05, lab06, lab07, lab08, lab09)

__all__ = [
    *_framework_names,
    "HIDDEN_CHECKS_INSTALLED",
    "LAB_MODULES",
    *(name for module in LAB_MODULES for name in module.__all__),
]

# The hidden checks are the instructor's (helpers/labs/hidden_checks.py): the grader puts their
# cells back into each submission. A student kit (python -m helpers.labs kit) leaves the module
# out, and then only the visible checks exist here.
try:
    from helpers.labs.hidden_checks import *
except ModuleNotFoundError as _err:  # pragma: no cover - the student kit
    if _err.name != "helpers.labs.hidden_checks":
        raise
    HIDDEN_CHECKS_INSTALLED = False
else:
    HIDDEN_CHECKS_INSTALLED = True
