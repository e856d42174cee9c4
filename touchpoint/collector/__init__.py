"""The HTTP collector: channel systems that cannot speak Kafka post JSON events here.

``touchpoint collect`` serves :func:`touchpoint.collector.app.create_app`; write keys
are in :mod:`touchpoint.collector.keys`; what a body becomes, and each event's verdict,
in :mod:`touchpoint.collector.batch`. Design: docs/design/collector.md.
"""
