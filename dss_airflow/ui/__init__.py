"""The admin page: a FastAPI app the Airflow api-server mounts (``plugin.py``), with a nav entry.

``overview`` gathers what the page shows from the project's own APIs (catalog, image ledger and planner,
model store, notebook servers and kernels, ``config validate``) as plain JSON-able data; ``app`` serves it
as one server-rendered page and JSON, behind Airflow's auth manager, and triggers the admin DAGs.
Imported only by the api-server (the plugin refers to it lazily).
"""

from __future__ import annotations

#: Where the api-server mounts the page's app (under ``[api] base_url``).
URL_PREFIX = "/dss-admin"
