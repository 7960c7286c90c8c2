"""Example Serve applications the lessons deploy, importable from any working directory.

Each module defines deployments and an ``app`` (a bound application), so all of these work
without a ``cd`` or ``--app-dir``, because the package is installed::

    serve run helpers.apps.classifier:app
    serve build helpers.apps.gateway:app helpers.apps.configurable:app -o apps.yaml
    # YAML:  import_path: helpers.apps.configurable:app

* :mod:`helpers.apps.model` - a tiny deterministic sentiment model (numpy, built in code).
* :mod:`helpers.apps.classifier` - ``TextClassifier``: classify and embed text.
* :mod:`helpers.apps.gateway` - ``Gateway``: a FastAPI ingress with ``/classify``, ``/health``,
  ``/debug`` and ``/slow``, calling the classifier through a ``DeploymentHandle``.
* :mod:`helpers.apps.configurable` - ``ConfigurableClassifier``: behaviour set by
  ``user_config`` (``reconfigure``), a custom ``check_health``, and a second code version
  (``app_v2``) for rolling updates.
* :mod:`helpers.apps.identity` - ``replica_identity()``: replica, pid and node in every
  response, so load balancing is visible.

Modules are imported on demand (``from helpers.apps.classifier import app``): importing
this package alone does not import Ray Serve.
"""

__all__ = ["classifier", "configurable", "gateway", "identity", "model", "text_input"]
