"""redmart-shim: the retired RedMart Partner API (v1), served over Lazada's /rss APIs.

Importing this package loads nothing else: the app comes from ``shim.app.create_app``, and
each layer (``shim.upstream``, ``shim.store``, ...) imports only what it needs.
"""
