"""The AuthConfig operator, installed from the ``operator`` extra: ``kopf run -m authsvc_operator``.

The folder is ``operator/`` in the repository and ``authsvc_operator`` once installed (pyproject.toml maps
it): a package named ``operator`` would shadow the standard library's. Importing the package registers the
kopf handlers, which is what ``kopf run -m`` does with it.
"""

from __future__ import annotations

from authsvc_operator import handlers as handlers
