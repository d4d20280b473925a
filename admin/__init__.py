"""The operator's service: the ``/v1`` campaign API, API keys and the audit trail (``adplatform admin``)."""
