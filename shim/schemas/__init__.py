"""Marshmallow schemas: one module per resource, each with its legacy side and its RSS side.

Naming: ``Legacy*QuerySchema`` / ``Legacy*PathSchema`` / ``Legacy*UpdateSchema`` load what a
legacy client sends (strict); ``Rss*ParamsSchema`` dump the business parameters of the
matching ``/rss`` call; ``Rss*Schema`` load the upstream ``result`` (tolerant of type
variance and new fields); ``Legacy*Schema`` dump the legacy JSON. Internal names are
snake_case; the wire names are set with ``data_key``. ``Rss*AsLegacySchema`` are derived
from a declared pair (``straight``): they load the upstream ``result`` straight into the
legacy JSON, in one pass, and are what the views of products and pickup locations use.

Dependency rule: no I/O and no Flask here; the clock is passed in where a rule needs "now".
"""
