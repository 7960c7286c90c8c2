"""Lessons built for doing: "Your turn" tasks, their checks, practice versions, the proof.

A "Your turn" task in a lesson is a code cell with a solution region (``### BEGIN SOLUTION``
/ ``### END SOLUTION``, with ``# HINT:`` lines) and, right after it, a code cell tagged
``check`` that verifies it. The same region parser serves the labs
(:mod:`helpers.solution_regions`).

* :mod:`helpers.lessons.checks` - :func:`check_that`, :func:`check_equal`, :func:`checking`:
  ``✓`` and what was verified, or :class:`TaskCheckFailed` with what is wrong, what was
  expected and "Look at: ...";
* :mod:`helpers.lessons.tasks` - finding a lesson's tasks, with clear errors naming the cell;
* :mod:`helpers.lessons.practice` - the practice versions in ``notebooks/practice/`` and
  :func:`reveal`, which prints a task's answer;
* :mod:`helpers.lessons.proof` - the proof notebook CI runs in place of a lesson with tasks:
  each check fails on its blank task and passes on the answer;
* :mod:`helpers.lessons.export` - a ``%%writefile`` cell whose second line is ``# export:
  helpers/...py`` has a package copy for later lessons, labs and tests, written by
  ``generate`` and checked by ``generate --check``.

Commands::

    python -m helpers.lessons generate            # notebooks/practice/, exported cells' copies
    python -m helpers.lessons generate --check    # exit 1, naming them, if any is stale
    python -m helpers.lessons list                # the lessons' tasks
    python -m helpers.lessons reveal 02a 3        # the answer to Your turn 3 of lesson 02a
    python -m helpers.lessons proof 02 -o build/proof/02.ipynb   # the proof notebook

Usage in a lesson's setup cell::

    from helpers.lessons import check_equal, check_that, checking, reveal
"""

from helpers.lessons.checks import TaskCheckFailed, check_equal, check_that, checking
from helpers.lessons.practice import reveal

__all__ = ["TaskCheckFailed", "check_equal", "check_that", "checking", "reveal"]
