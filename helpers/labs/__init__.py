"""Classroom labs: sources with solutions, generated student versions, checks, grading.

* :mod:`helpers.labs.session` - :class:`LabSession`: a lab's cluster, Serve, application
  names of the student's own (so a class can share one cluster), and ``lab.hint(N)``, the
  tiered hints (counted; the grader reports the count);
* :mod:`helpers.labs.checks` - the checks, visible and hidden, that inspect the real cluster
  and say what is wrong and where to look: a package, one module per lab (``lab01`` ...) on
  ``framework`` (the registry and the shared plumbing); importing it registers every lab's;
* :mod:`helpers.labs.notebooks` - solution and hidden-check regions; the student versions;
* :mod:`helpers.labs.grading` - grading a folder of submissions headless, with reports;
* :mod:`helpers.labs.apps` - workloads the labs deploy (a model on a simulated accelerator).

Commands::

    python -m helpers.labs generate            # labs/student/ from labs/source/
    python -m helpers.labs generate --check    # exit 1 if a student version is stale
    python -m helpers.labs grade SUBMISSIONS --out build/grades [--ray-address HOST:PORT ...]

Usage in a lab's Setup cell::

    from helpers.labs import LabSession, checks
    lab = LabSession("lab01", cluster, student=student)
"""

from helpers.labs import checks
from helpers.labs.session import LabSession, student_slug

__all__ = ["LabSession", "checks", "student_slug"]
